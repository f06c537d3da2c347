"""Phases as resumable units: a phase is finished exactly when its completion marker exists.

    phase = Phase(run_dir, iteration=1, name="generate")
    if (done := phase.done(settings, inputs)) is None:
        phase.begin(settings, inputs)       # records what the phase is run with, before any work
        outputs = ...run it, writing into phase.dir...
        done = phase.complete(outputs)      # written last, atomically

The marker (``<run_dir>/iter_<i>/<name>/DONE.json``) names the phase's outputs, the settings it read and
the version ids of its inputs. A restarted job trusts only markers: a directory without one is
half-written and is redone (or resumed by the phase itself, as GRPO resumes from its saved steps). A phase
started or finished with other settings or inputs is never silently reused: :meth:`Phase.done` raises
:class:`ChangedSettings` naming what differs. Paths in outputs are stored relative to the run directory
(:meth:`Phase.relative`, :meth:`Phase.resolve`), so a moved run resumes and serves from where it is.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

MARKER = "DONE.json"
STARTED = "STARTED.json"
"""Written when a phase begins: the settings and inputs of a phase in progress (GRPO resumes its steps)."""


class ChangedSettings(RuntimeError):
    """A phase of this run was started or finished with other settings or inputs than the job has now."""

    def __init__(self, phase: Phase, changes: dict[str, tuple[Any, Any]]) -> None:
        self.phase, self.changes = phase, changes
        listed = "; ".join(f"{k}: {old!r} -> {new!r}" for k, (old, new) in sorted(changes.items()))
        if any(k.startswith("input ") for k in changes):  # other weights than it was run on
            hint = (f"its inputs changed (another model than it was run on): remove {phase.dir} and the "
                    "phases after it to redo them, or use another run name")  # fmt: skip
        else:
            hint = ("keep the earlier settings, use another run name, or pass --rerun-changed to "
                    "jobs/evolve.py to redo it and every phase after it")  # fmt: skip
        super().__init__(f"{phase.label} was run with other settings ({listed}); {hint}")


def flat_settings(config: dict, fields: tuple[str, ...]) -> dict[str, Any]:
    """The dotted leaves of ``config`` (a config dumped as JSON) under each of ``fields`` (a dotted section
    or field name). Every key is a full dotted name, so a change is reported as the field a user sets."""
    out: dict[str, Any] = {}

    def walk(prefix: str, value: Any) -> None:
        if isinstance(value, dict):
            for key, inner in value.items():
                walk(f"{prefix}.{key}", inner)
        else:
            out[prefix] = value

    for name in fields:
        value: Any = config
        for part in name.split("."):
            if not isinstance(value, dict) or part not in value:
                raise KeyError(f"a phase declares it reads {name!r}, which the config does not have")
            value = value[part]
        walk(name, value)
    return out


def differences(recorded: dict[str, Any], now: dict[str, Any]) -> dict[str, tuple[Any, Any]]:
    """``{name: (recorded, now)}`` for every key whose value differs (a key on one side only included)."""
    return {
        k: (recorded.get(k), now.get(k))
        for k in sorted(set(recorded) | set(now))
        if recorded.get(k) != now.get(k)
    }


@dataclass(frozen=True)
class Phase:
    """One phase of one iteration of a run."""

    run_dir: Path
    iteration: int
    name: str

    @property
    def dir(self) -> Path:
        """Where the phase writes its outputs."""
        return Path(self.run_dir) / f"iter_{self.iteration}" / self.name

    @property
    def label(self) -> str:
        """``iter_1/generate``: the phase as the run directory names it."""
        return f"iter_{self.iteration}/{self.name}"

    def recorded(self) -> dict[str, Any] | None:
        """The marker if the phase finished, else what it was begun with, else None (never started)."""
        for name in (MARKER, STARTED):
            if (self.dir / name).is_file():
                return json.loads((self.dir / name).read_text())
        return None

    def changes(
        self, settings: dict[str, Any], inputs: dict[str, str] | None = None
    ) -> dict[str, tuple[Any, Any]]:
        """What differs between the phase's record and ``settings`` (and ``inputs``, unless None): {} when
        it never started, or was recorded before phases stored their settings."""
        record = self.recorded()
        if record is None or "settings" not in record:
            return {}
        changed = differences(record["settings"], settings)
        if inputs is not None:
            changed |= {f"input {k}": v for k, v in differences(record.get("inputs", {}), inputs).items()}
        return changed

    def done(
        self, settings: dict[str, Any] | None = None, inputs: dict[str, str] | None = None
    ) -> dict[str, Any] | None:
        """The outputs recorded by the marker, or None when the phase has not finished.

        With ``settings`` (and ``inputs``), raises :class:`ChangedSettings` if the phase was started or
        finished with others: its outputs (or its saved steps) belong to another configuration.
        """
        if settings is not None and (changed := self.changes(settings, inputs)):
            raise ChangedSettings(self, changed)
        marker = self.dir / MARKER
        if not marker.is_file():
            return None
        return json.loads(marker.read_text())["outputs"]

    def begin(self, settings: dict[str, Any], inputs: dict[str, str]) -> None:
        """Record the settings and inputs the phase is run with (before its first output)."""
        self._write(
            STARTED, {"phase": self.name, "iteration": self.iteration, "settings": settings, "inputs": inputs}
        )

    def complete(self, outputs: dict[str, Any]) -> dict[str, Any]:
        """Record the phase as finished with `outputs` (JSON-able: paths, ids, counts); returns them. The
        settings and inputs come from :meth:`begin` (a phase never begun records none)."""
        started = json.loads((self.dir / STARTED).read_text()) if (self.dir / STARTED).is_file() else {}
        record = {
            "phase": self.name,
            "iteration": self.iteration,
            "finished_at": time.time(),
            "outputs": outputs,
        }
        record |= {k: started[k] for k in ("settings", "inputs") if k in started}
        self._write(MARKER, record)
        return outputs

    def relative(self, path: str | Path) -> str:
        """``path`` as stored in a marker: relative to the run directory when inside it, else absolute."""
        path, root = Path(os.path.abspath(path)), Path(os.path.abspath(self.run_dir))
        return path.relative_to(root).as_posix() if path.is_relative_to(root) else str(path)

    def resolve(self, stored: str) -> str:
        """A path read from a marker, made absolute under the run directory where it is now."""
        return str(Path(self.run_dir) / stored)

    def _write(self, name: str, record: dict) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        tmp = self.dir / (name + ".tmp")
        tmp.write_text(json.dumps(record, indent=2))
        tmp.replace(self.dir / name)
