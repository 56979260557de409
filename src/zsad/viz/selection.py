"""Which test images of a category keep their maps for pictures: a bounded, balanced sample taken while streaming.

The evaluator sees a category's images once, in loader order (MVTec-style folders often list every defect folder
before ``good``), so the choice is made on the fly with at most ``limit`` pictures held at any time:

* half of the places (rounded down) go to normal images and the rest to anomalous ones; while one kind holds less
  than its share, an image of that kind takes the place of the latest-kept image of the other kind;
* among anomalous images, a defect type not yet kept replaces the latest image of the most frequent defect type
  (when that type is kept more than once), so a few pictures show the variety of a category.

When a category has fewer images of one kind, the other kind keeps the free places.

With ``selection="worst"`` (the result gallery's choice) the places go to the images a method gets most wrong,
whatever the threshold: the highest-scoring normal images (worst false positives) and the lowest-scoring anomalous
images (worst false negatives), half of the places each.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable
from typing import Literal, get_args

from zsad.errors import ConfigError
from zsad.metrics.results import Picture

Selection = Literal["mixed", "worst"]
SELECTIONS: tuple[str, ...] = get_args(Selection)


class PictureKeeper:
    """Keeps at most ``limit`` pictures of one category, mixing normal and anomalous images and defect types.

    Pictures are built only when kept (``make`` is called lazily), so that images moved off the device are only
    the ones that stay.

    Args:
        limit: Most pictures held (0 keeps none).
        selection: ``"mixed"`` (normal and anomalous images, defect types varied) or ``"worst"`` (highest-scoring
            normal and lowest-scoring anomalous images).

    Raises:
        ConfigError: An unknown selection.
    """

    def __init__(self, limit: int, selection: Selection = "mixed") -> None:
        if selection not in SELECTIONS:
            raise ConfigError(f"picture selection '{selection}' is unknown; use one of {list(SELECTIONS)}.")
        self.limit = limit
        self.selection = selection
        self.kept: list[Picture] = []

    def offer(self, anomalous: bool, defect_type: str, make: Callable[[], Picture], score: float = 0.0) -> bool:
        """Consider one image (``score``: its image score); returns whether it was kept (maybe replacing one)."""
        if self.limit <= 0:
            return False
        if len(self.kept) >= self.limit:
            if self.selection == "worst":
                victim = self._worst_place_for(anomalous, score)
            else:
                victim = self._place_for(anomalous, defect_type)
            if victim is None:
                return False
            del self.kept[victim]
        self.kept.append(make())
        return True

    def _place_for(self, anomalous: bool, defect_type: str) -> int | None:
        """Index of the kept picture a new image would replace, or ``None`` if it should be dropped."""
        normal_share = self.limit // 2
        normals = [i for i, p in enumerate(self.kept) if p.label == 0]
        anomalies = [i for i, p in enumerate(self.kept) if p.label != 0]
        if not anomalous:
            return self._latest_of_most_frequent_type(anomalies) if len(normals) < normal_share else None
        if len(anomalies) < self.limit - normal_share:
            return normals[-1]
        counts = Counter(self.kept[i].defect_type for i in anomalies)
        if defect_type in counts or counts.most_common(1)[0][1] < 2:
            return None
        return self._latest_of_most_frequent_type(anomalies)

    def _worst_place_for(self, anomalous: bool, score: float) -> int | None:
        """The kept picture a worse-scored image replaces, or ``None``.

        The least wrong one of its kind, or of the other kind while its own kind holds less than its share.
        """
        normal_share = self.limit // 2
        normals = [i for i, p in enumerate(self.kept) if p.label == 0]
        anomalies = [i for i, p in enumerate(self.kept) if p.label != 0]
        if anomalous:
            if len(anomalies) < self.limit - normal_share:
                return min(normals, key=lambda i: self.kept[i].score)
            mildest = max(anomalies, key=lambda i: self.kept[i].score)
            return mildest if score < self.kept[mildest].score else None
        if len(normals) < normal_share:
            return max(anomalies, key=lambda i: self.kept[i].score)
        mildest = min(normals, key=lambda i: self.kept[i].score)
        return mildest if score > self.kept[mildest].score else None

    def _latest_of_most_frequent_type(self, anomalies: list[int]) -> int:
        frequent = Counter(self.kept[i].defect_type for i in anomalies).most_common(1)[0][0]
        return max(i for i in anomalies if self.kept[i].defect_type == frequent)


def select_pictures(pictures: Iterable[Picture], limit: int, selection: Selection = "mixed") -> list[Picture]:
    """At most ``limit`` pictures per ``(dataset, category)``, chosen as :class:`PictureKeeper` does while streaming."""
    keepers: dict[tuple[str, str], PictureKeeper] = {}
    for picture in pictures:
        keeper = keepers.setdefault((picture.dataset, picture.category), PictureKeeper(limit, selection))
        keeper.offer(picture.label != 0, picture.defect_type, lambda picture=picture: picture, picture.score)
    return [picture for keeper in keepers.values() for picture in keeper.kept]
