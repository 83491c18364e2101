#!/bin/sh
# Renders alerting/alertmanager.yml and alerting/templates/ for one deployment, then starts
# Alertmanager with them. The one renderer of every deployment path: compose's entrypoint,
# `make stack` (tools/stack.py) and the tests (tools/testkit/alertmanager_run.py) all run it.
#
#   sh alerting/entrypoint.sh [--render-only] [alertmanager flags...]
#
# From the environment (all optional; .env.example says what each is for):
#   SLACK_WEBHOOK_URL, PAGERDUTY_ROUTING_KEY  written to secret files (placeholders when unset,
#                                             so a notification fails loudly, never silently)
#   PAGERDUTY_EVENTS_URL                      PagerDuty's endpoint (a proxy or a test sink)
#   DEADMANSSWITCH_URL                        the heartbeat service MLWatchdog is sent to;
#                                             unset: MLWatchdog is routed nowhere
#   RUNBOOK_BASE_URL                          prefixed to each alert's docs/runbooks.md#... link
#   ALERTING_SOURCE_DIR  where alertmanager.yml and templates/ are read (default: this folder)
#   ALERTMANAGER_RUN_DIR where the rendered files and secrets go: a memory-only tmpfs in compose
#   ALERTMANAGER_BINARY  default `alertmanager`
#
# POSIX sh and sed only: the official Alertmanager image is busybox, without Python or bash.
set -eu

source_dir=${ALERTING_SOURCE_DIR:-$(dirname "$0")}
run_dir=${ALERTMANAGER_RUN_DIR:-/etc/alertmanager/run}

umask 077
mkdir -p "$run_dir/templates"
# Said once at start, in Alertmanager's log: an unset destination is a placeholder that fails
# every notification (MLAlertNotificationsFailing), and an unset heartbeat watches nothing.
for name in SLACK_WEBHOOK_URL PAGERDUTY_ROUTING_KEY DEADMANSSWITCH_URL; do
  eval "value=\${$name:-}"
  if [ -z "$value" ]; then
    echo "alerting/entrypoint.sh: $name is not set (see .env.example)" >&2
  fi
done
printf '%s' "${SLACK_WEBHOOK_URL:-http://127.0.0.1:9/slack-webhook-not-set}" \
  > "$run_dir/slack_webhook_url"
printf '%s' "${PAGERDUTY_ROUTING_KEY:-pagerduty-routing-key-not-set}" \
  > "$run_dir/pagerduty_routing_key"

# A value inside a sed replacement: `&`, `|` (our delimiter) and `\` are literal.
literal() { printf '%s' "$1" | sed 's/[&|\\]/\\&/g'; }

if [ -n "${DEADMANSSWITCH_URL:-}" ]; then
  watchdog="s|http://deadmansswitch.invalid/set-DEADMANSSWITCH_URL|$(literal "$DEADMANSSWITCH_URL")|"
else
  watchdog='s|receiver: deadmansswitch$|receiver: "null"|'
fi
sed -e "s|/etc/alertmanager/secrets|$(literal "$run_dir")|g" \
    -e "s|/etc/alertmanager/templates|$(literal "$run_dir/templates")|g" \
    -e "s|https://events.pagerduty.com/v2/enqueue|$(literal "${PAGERDUTY_EVENTS_URL:-https://events.pagerduty.com/v2/enqueue}")|" \
    -e "$watchdog" \
    "$source_dir/alertmanager.yml" > "$run_dir/alertmanager.yml"
for template in "$source_dir"/templates/*.tmpl; do
  sed "s|@RUNBOOK_BASE_URL@|$(literal "${RUNBOOK_BASE_URL:-}")|g" "$template" \
    > "$run_dir/templates/$(basename "$template")"
done

if [ "${1:-}" = "--render-only" ]; then
  exit 0
fi
exec "${ALERTMANAGER_BINARY:-alertmanager}" --config.file="$run_dir/alertmanager.yml" "$@"
