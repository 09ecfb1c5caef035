"""What defines a search on disk (`search.yaml`), and whether a folder can be resumed.

A search is resumed by running the same call again. What the results depend
on (`IDENTITY_KEYS`: the space, the data, the tuner, the epochs, ...) must be
the same; anything else (`max_trials`, `time_budget`) may change. A changed
identity is refused with `InputError` unless `overwrite=True`.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Mapping

from kerascnn.checks import InputError, received
from kerascnn.files import read_json, read_yaml

SEARCH_FILE = "search.yaml"
# what a resumed search must share with the one on disk
IDENTITY_KEYS = ("tuner", "epochs", "dataset", "dataset_fingerprint", "image_size",
                 "validation_split", "batch_size", "patience", "per_block_filters",
                 "augmentation", "max_params", "max_macs", "space")
# search.yaml: every resolved option, readable again with `--config`
SEARCH_KEYS = ("dataset", "tuner", "max_trials", "epochs", "time_budget", "max_params",
               "max_macs", "patience", "batch_size", "validation_split", "image_size",
               "per_block_filters", "augmentation", "seed", "space")


def search_yaml(config: Mapping[str, Any]) -> dict[str, Any]:
    """The content of `search.yaml`: every resolved option, readable again with `--config`."""
    return {key: config.get(key) for key in SEARCH_KEYS}


def _norm(value: Any) -> Any:
    return json.loads(json.dumps(value, default=str))


def changed_keys(old: Mapping[str, Any], new: Mapping[str, Any]) -> list[str]:
    """The identity keys whose values differ (a key unknown on either side is skipped)."""
    return [k for k in IDENTITY_KEYS if k in new and k in old
            and not (k == "dataset_fingerprint" and (new[k] is None or old[k] is None))
            and _norm(old.get(k)) != _norm(new.get(k))]


def check_resume(project_dir: Path, config: Mapping[str, Any], overwrite: bool) -> bool:
    """True when resuming; `InputError` when the folder holds another search.

    Args:
        project_dir: Path. `<directory>/<project_name>`.
        config: the resolved options of this call (with `dataset_fingerprint`
            once the data is loaded, else None).
        overwrite: bool. Start over instead.
    """
    project_dir = Path(project_dir)
    if not project_dir.exists():
        return False
    if not project_dir.is_dir():
        raise InputError(f"The search folder exists and is not a folder. Received: "
                         f"directory={str(project_dir.parent)!r}, "
                         f"project_name={project_dir.name!r}")
    if overwrite or not any(project_dir.iterdir()):
        return False
    path = project_dir / SEARCH_FILE
    if not path.is_file():
        raise InputError(f"{str(project_dir)!r} holds files but no {SEARCH_FILE}, so it is not "
                         f"a kerascnn search to resume; pass --overwrite to replace it or choose "
                         f"another --project-name. {received('project_name', project_dir.name)}")
    old = dict(read_yaml(path) or {})
    try:  # the data the old search saw: its manifest's fingerprint
        old["dataset_fingerprint"] = read_json(project_dir / "manifest.json").get(
            "dataset_fingerprint")
    except (OSError, ValueError):
        old["dataset_fingerprint"] = None
    new = {**search_yaml(config), "dataset_fingerprint": config.get("dataset_fingerprint")}
    changed = changed_keys(old, new)
    if changed:
        details = []
        for k in changed:
            if k == "space":
                o, n = old.get(k) or {}, new.get(k) or {}
                diff = [f"{h}: {o.get(h)!r} -> {n.get(h)!r}" for h in n if o.get(h) != n.get(h)]
                details.append("space (" + "; ".join(diff) + ")")
            else:
                details.append(f"{k}: {old.get(k)!r} -> {new.get(k)!r}")
        raise InputError(
            f"{str(project_dir)!r} holds a search with another configuration, so it cannot be "
            f"resumed; pass --overwrite to start over or choose another --project-name. "
            f"Received: {', '.join(details)}")
    return True
