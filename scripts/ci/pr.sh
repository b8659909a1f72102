#!/usr/bin/env bash
# CI on a pull request: run the pipeline with small params, then write `dvc metrics diff` against
# the base revision and the gate report to the job summary ($GITHUB_STEP_SUMMARY, else ci-summary.md).
# Extra arguments go to `peftpipe run` (e.g. -S train.steps=10). Exit status: the run's.
set -uo pipefail
PEFTPIPE=${PEFTPIPE:-peftpipe}
DVC=${DVC:-dvc}
BASE=${PEFTPIPE_BASE_REV:-HEAD}
SUMMARY=${GITHUB_STEP_SUMMARY:-ci-summary.md}

"$PEFTPIPE" run -S train.steps=30 -S evaluate.max_samples=50 "$@"
status=$?
{
  echo "## peftpipe on this change: $([ $status -eq 0 ] && echo 'gates passed' || echo "run failed (exit $status)")"
  echo
  echo "### dvc metrics diff ($BASE -> this change)"
  echo
  "$DVC" metrics diff "$BASE" --all --md --targets metrics/evaluate.json metrics/evaluate_base.json metrics/gate.json metrics/train.json 2>/dev/null || echo "(no metrics to compare)"
  echo
  "$PEFTPIPE" summary --markdown
} >> "$SUMMARY"
echo "job summary written to $SUMMARY"
exit $status
