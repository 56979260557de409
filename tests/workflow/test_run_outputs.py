"""The results writer's threshold, map and gallery options: refused when inconsistent, another run's thresholds."""

from __future__ import annotations

import json

import pytest

from zsad.errors import ConfigError
from zsad.workflow.results import ResultsWriter
from zsad.workflow.run_outputs import RunOutputOptions


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"threshold_rule": "best"}, "threshold_rule='best' is unknown"),
        ({"threshold_rule": "from_run"}, "go together"),
        ({"thresholds_from": "x.json"}, "go together"),
        ({"image_threshold": 0.5}, "set it"),
        ({"maps": "tiff"}, "maps='tiff'"),
        ({"html": True, "html_pictures": 0}, "at least 1 figure"),
    ],
)
def test_inconsistent_options_are_refused_before_the_test(options, message):
    with pytest.raises(ConfigError, match=message):
        ResultsWriter(**options)


def test_from_run_reads_another_runs_thresholds(tmp_path):
    protocol = {"name": "p", "targets": [{"dataset": "mvtec", "categories": ["bottle"]}]}
    per_category = {"mvtec": {"bottle": {"image": {"threshold": 0.7}, "pixel": {"threshold": 1.9}}}}
    source = tmp_path / "results.json"
    source.write_text(json.dumps({"protocol": protocol, "thresholds": {"rule": "f1", "per_category": per_category}}))
    options = RunOutputOptions(threshold_rule="from_run", thresholds_from=str(source))
    same = options.rule(protocol)
    assert same.given == {"mvtec": {"bottle": {"image": 0.7, "pixel": 1.9}}}
    assert same.tuned_on_target and "tuned on the target set" in same.describe()  # it tested these very images
    other = options.rule({"name": "q", "targets": [{"dataset": "visa", "categories": None}]})
    assert not other.tuned_on_target and str(source) in other.describe()
    source.write_text(json.dumps({"per_category": {}}))
    with pytest.raises(ConfigError, match="records no thresholds"):
        options.rule(protocol)
