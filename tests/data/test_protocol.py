"""Cross-dataset protocols: sources, leakage refusal, presets."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from zsad.data.protocol import DataSource, ProtocolDataModule, find_overlaps
from zsad.errors import ConfigError, UnknownComponentError

CONFIGS = Path(__file__).resolve().parents[2] / "configs" / "protocol"


def test_records_of_aux_and_targets(synthetic_root):
    module = ProtocolDataModule(
        aux=[DataSource("synthetic", str(synthetic_root), ["disc", "tile"])],
        targets=[{"dataset": "synthetic", "root": str(synthetic_root), "categories": ["ring"]}],
        name="demo",
        image_size=32,
        num_workers=0,
    )
    assert {r.category for r in module.aux_records()} == {"disc", "tile"}
    assert {r.category for r in module.target_records()} == {"ring"}
    assert module.protocol() == {
        "name": "demo",
        "aux": [{"dataset": "synthetic", "root": str(synthetic_root), "categories": ["disc", "tile"], "split": "test"}],
        "targets": [{"dataset": "synthetic", "root": str(synthetic_root), "categories": ["ring"], "split": "test"}],
        "allow_overlap": False,
    }
    batch = next(iter(module.test_dataloader()))
    assert batch["image"].shape[1:] == (3, 32, 32)


def test_overlap_is_refused_unless_allowed(synthetic_root):
    aux = [DataSource("synthetic", str(synthetic_root), ["disc"])]
    targets = [DataSource("synthetic", str(synthetic_root), None)]  # None: every category, disc included
    module = ProtocolDataModule(aux=aux, targets=targets, name="leaky")
    with pytest.raises(
        ConfigError, match=r"Protocol 'leaky' trains on data it also evaluates.*\['disc'\].*allow_overlap"
    ):
        module.target_records()
    allowed = ProtocolDataModule(aux=aux, targets=targets, name="leaky", allow_overlap=True)
    assert len(allowed.aux_records()) > 0


def test_same_folder_under_another_name_still_overlaps(synthetic_root):
    """Reading one folder as two benchmarks must not hide the leak."""
    overlaps = find_overlaps(
        [DataSource("synthetic", str(synthetic_root), ["disc"])], [DataSource("mvtec", str(synthetic_root), ["disc"])]
    )
    assert len(overlaps) == 1


def test_different_folders_of_different_benchmarks_do_not_overlap(synthetic_root, tmp_path):
    assert (
        find_overlaps(
            [DataSource("synthetic", str(synthetic_root), ["disc"])], [DataSource("mvtec", str(tmp_path), ["disc"])]
        )
        == []
    )


def test_unknown_dataset_name_lists_valid_ones(tmp_path):
    with pytest.raises(UnknownComponentError, match=r"Unknown dataset 'mvtek'.*Did you mean 'mvtec'"):
        ProtocolDataModule(aux=[], targets=[DataSource("mvtek", str(tmp_path))])


def test_no_targets_is_refused():
    with pytest.raises(ConfigError, match="no targets"):
        ProtocolDataModule(aux=[], targets=[])


def test_synthetic_sources_generate_themselves(tmp_path):
    root = tmp_path / "generated"
    module = ProtocolDataModule(aux=[], targets=[DataSource("synthetic", str(root), ["ring"])])
    module.prepare_data()
    assert len(module.target_records()) == 16


@pytest.mark.parametrize(
    ("preset", "aux", "first_target"), [("mvtec_to_all", "mvtec", "visa"), ("visa_to_mvtec", "visa", "mvtec")]
)
def test_presets_train_on_one_benchmark_and_never_test_it(preset, aux, first_target):
    config = yaml.safe_load((CONFIGS / f"{preset}.yaml").read_text())["data"]
    assert config["class_path"] == "protocol"
    arguments = config["init_args"]
    assert [s["dataset"] for s in arguments["aux"]] == [aux]
    targets = [s["dataset"] for s in arguments["targets"]]
    assert targets[0] == first_target and aux not in targets
