"""Organiser operations across tracks: the results export, verification of dataset submissions."""

from __future__ import annotations

import csv
import io

from datarena.challenge.state import ChallengeState
from datarena.errors import DatarenaError

EXPORT_COLUMNS = ["phase", "commitment", "secret", "track", "team", "item", "attempt", "score",
                  "worst_group_accuracy", "detail", "sha256", "submitted_at"]


class OrganiserMixin(ChallengeState):
    def export_results(self) -> str:
        """CSV of every submission of every track and phase (a phase's secret once revealed, never its seed)."""
        buf = io.StringIO()
        w = csv.DictWriter(buf, fieldnames=EXPORT_COLUMNS)
        w.writeheader()
        for track in self.tracks.values():
            for row in track.export_rows():
                w.writerow(row)
        return buf.getvalue()

    def verify_submission(self, submission_id: int):
        """Queue the re-run (and regeneration) of a dataset submission; returns the job."""
        from datarena.challenge.models import DatasetSubmission

        with self.Session() as s:
            sub = s.get(DatasetSubmission, submission_id)
        if sub is None:
            raise DatarenaError(f"no dataset submission {submission_id}; the track page lists them.")
        return self.track(sub.track_id).verify(submission_id)
