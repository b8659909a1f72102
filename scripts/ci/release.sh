#!/usr/bin/env bash
# CI on a manual dispatch or a release tag: promote a registered version to production, gated
# (refused when its gates failed or its metrics regress against the current production version).
# VERSION=vX.Y.Z picks one; default: the version now in staging.
set -euo pipefail
PEFTPIPE=${PEFTPIPE:-peftpipe}
SUMMARY=${GITHUB_STEP_SUMMARY:-ci-summary.md}

"$PEFTPIPE" promote --to production ${VERSION:+--version "$VERSION"}
{
  echo "## peftpipe: production"
  echo
  echo '```'
  "$PEFTPIPE" registry
  echo '```'
} >> "$SUMMARY"
