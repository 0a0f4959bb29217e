# The release this source tree builds. This is the only file that differs between the
# published tags: workload/publish-repo.sh rewrites it for v1.0.0.
set(HFT_VERSION "1.1.0")
# v1.1.0 writes per-strategy metrics to the strategy_metrics table (migration 005);
# v1.0.0 does not.
set(HFT_WRITE_STRATEGY_METRICS_DEFAULT ON)
# Only the lab's broken release (v1.1.1) sets this: it builds and starts but is never healthy.
set(HFT_NEVER_HEALTHY_DEFAULT OFF)
