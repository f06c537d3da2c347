"""Phases as resumable units: a phase is finished exactly when its completion marker exists.

    phase = Phase(run_dir, iteration=1, name="generate")
    if (done := phase.done()) is None:
        outputs = ...run it, writing into phase.dir...
        done = phase.complete(outputs)      # written last, atomically

The marker (``<run_dir>/iter_<i>/<name>/DONE.json``) names the phase's outputs and their content ids.
A restarted job trusts only markers: a directory without one is half-written and is redone (or resumed
by the phase itself, as GRPO resumes from its saved steps).
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

MARKER = "DONE.json"


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

    def done(self) -> dict[str, Any] | None:
        """The outputs recorded by the marker, or None when the phase has not finished."""
        marker = self.dir / MARKER
        if not marker.is_file():
            return None
        return json.loads(marker.read_text())["outputs"]

    def complete(self, outputs: dict[str, Any]) -> dict[str, Any]:
        """Record the phase as finished with `outputs` (JSON-able: paths, ids, counts); returns them."""
        self.dir.mkdir(parents=True, exist_ok=True)
        tmp = self.dir / (MARKER + ".tmp")
        tmp.write_text(
            json.dumps(
                {
                    "phase": self.name,
                    "iteration": self.iteration,
                    "finished_at": time.time(),
                    "outputs": outputs,
                },
                indent=2,
            )
        )
        tmp.replace(self.dir / MARKER)
        return outputs
