#!/usr/bin/env bash
# CI on main: run the pipeline; when its gates pass, register the bundle in the model registry
# (GTO tag on a registration commit) and promote it to staging. With a DVC remote configured
# (`dvc remote add -d ...`), the bundle is pushed there so any machine can fetch the version.
# Extra arguments go to `peftpipe release` (e.g. -S train.steps=10).
set -euo pipefail
PEFTPIPE=${PEFTPIPE:-peftpipe}
DVC=${DVC:-dvc}
SUMMARY=${GITHUB_STEP_SUMMARY:-ci-summary.md}

"$PEFTPIPE" release --to staging "$@"
if [ -n "$("$DVC" remote list)" ]; then
  "$DVC" push --quiet
  echo "pushed the DVC cache to the default remote"
fi
{
  echo "## peftpipe on main"
  echo
  "$PEFTPIPE" summary --markdown
  echo
  echo '```'
  "$PEFTPIPE" registry
  echo '```'
} >> "$SUMMARY"
