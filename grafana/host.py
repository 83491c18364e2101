"""The host dashboard `ml-host`: the machine under the stack and its containers, by the USE
method (for each resource its utilisation, its saturation and its errors), from node-exporter
(job `node`) and cAdvisor (job `cadvisor`), the two compose-only jobs that nothing else read.

Rows: the host at a glance; CPU; memory; disks; network; the containers (CPU, memory against
the limit, restarts, OOM kills). Each alert of the `ml-host` group of prometheus/alerts.yml has
the panel that draws its figure and threshold, named in the panel's description. The variables
are the host (`node`, node-exporter's instance) and the container (`container`, cAdvisor's
`name`): there is no `environment` or `model` on a host's series.
"""

from __future__ import annotations

from typing import Any

from grafana.panels import (
    GREEN,
    ORANGE,
    RED,
    THRESHOLDS,
    alert_steps,
    datasource_variable,
    mapping,
    prom,
    query_variable,
    row,
    runbook_variable,
    stat,
    steps,
    threshold_line,
    timeseries,
)

NODE = 'instance=~"$node"'
# Real filesystems, as the alerts read them: tmpfs and ramfs are memory, overlay a container's.
FS = f'fstype!~"tmpfs|ramfs|overlay", {NODE}'
CONTAINER = 'name!="", name=~"$container"'
# Physical interfaces: not loopback, not Docker's bridges and veth pairs (the containers' own
# traffic is in the containers row).
NIC = f'device!~"lo|veth.*|docker.*|br-.*", {NODE}'
DISK = f'device!~"loop.*|ram.*|dm-.*", {NODE}'

CPU_BUSY = (
    f'sum by (instance) (rate(node_cpu_seconds_total{{mode!~"idle|iowait", {NODE}}}'
    f"[$__rate_interval])) / count by (instance) "
    f'(node_cpu_seconds_total{{mode="idle", {NODE}}})'
)
MEMORY_AVAILABLE = (
    f"node_memory_MemAvailable_bytes{{{NODE}}} / node_memory_MemTotal_bytes{{{NODE}}}"
)
FS_FREE = f"node_filesystem_avail_bytes{{{FS}}} / node_filesystem_size_bytes{{{FS}}}"
TIME_UNTIL_FULL = (
    f"predict_linear(node_filesystem_avail_bytes{{{FS}}}[6h], 0) "
    f"/ -deriv(node_filesystem_avail_bytes{{{FS}}}[6h]) "
    f"and deriv(node_filesystem_avail_bytes{{{FS}}}[6h]) < 0"
)
CONTAINER_RESTARTS = (
    f"sum by (name) (changes(container_start_time_seconds{{{CONTAINER}}}[15m]) + 1) - 1"
)
CONTAINER_MEMORY_OF_LIMIT = (
    f"max by (name) (container_memory_working_set_bytes{{{CONTAINER}}} "
    f"/ (container_spec_memory_limit_bytes{{{CONTAINER}}} > 0))"
)


def host_variables() -> list[dict[str, Any]]:
    return [
        datasource_variable(),
        query_variable("node", "Host", "label_values(node_uname_info, instance)"),
        query_variable(
            "container", "Container", 'label_values(container_start_time_seconds{name!=""}, name)'
        ),
        runbook_variable(),
    ]


def memory_steps() -> dict[str, Any]:
    return steps(
        RED,
        (THRESHOLDS["ml:threshold:host_memory_available_critical"], ORANGE),
        (THRESHOLDS["ml:threshold:host_memory_available_warning"], GREEN),
    )


def at_a_glance() -> list[dict[str, Any]]:
    return [
        row("Host at a glance"),
        stat(
            "Scrape targets: node-exporter, cAdvisor",
            "none",
            prom('up{job=~"node|cadvisor"}', "{{job}} {{instance}}"),
            description=(
                "Whether Prometheus reaches node-exporter and cAdvisor (MLTargetDown while one "
                "is 0: this dashboard and the host alerts are blind to it)."
            ),
            mappings=mapping((0, "down", RED), (1, "up", GREEN)),
            thresholds=steps(RED, (1, GREEN)),
        ),
        stat(
            "CPU busy",
            "percentunit",
            prom(CPU_BUSY, "{{instance}}"),
            description="Share of CPU time neither idle nor waiting on I/O, every core.",
            thresholds=alert_steps("host_cpu_busy_ratio", low_is_bad=False, color=ORANGE),
        ),
        stat(
            "Memory available",
            "percentunit",
            prom(MEMORY_AVAILABLE, "{{instance}}"),
            description="MemAvailable over MemTotal: what can be allocated without swapping.",
            thresholds=memory_steps(),
        ),
        stat(
            "Fullest filesystem: free",
            "percentunit",
            prom(f"min by (instance) ({FS_FREE})", "{{instance}}"),
            description="Free share of the fullest real filesystem (not tmpfs, not overlay).",
            thresholds=alert_steps("host_disk_free_ratio", low_is_bad=True, color=ORANGE),
        ),
    ]


def cpu() -> list[dict[str, Any]]:
    return [
        row("CPU: utilisation, saturation"),
        timeseries(
            "CPU busy (utilisation)",
            "percentunit",
            prom(CPU_BUSY, "{{instance}}"),
            threshold_line("host_cpu_busy_ratio", "alert threshold"),
            description=(
                "Share of CPU time neither idle nor waiting on I/O, averaged over the cores "
                "(MLHostCpuSaturated over the threshold for 15 minutes; a ticket, not a page)."
            ),
            thresholds=alert_steps("host_cpu_busy_ratio", low_is_bad=False, color=ORANGE),
            width=8,
        ),
        timeseries(
            "Load per core (saturation)",
            "short",
            prom(
                f"node_load1{{{NODE}}} / on (instance) "
                f'count by (instance) (node_cpu_seconds_total{{mode="idle", {NODE}}})',
                "{{instance}}",
            ),
            description=(
                "Runnable (and uninterruptible) tasks per core, over a minute: above 1, work "
                "waits for a CPU."
            ),
            thresholds=steps(GREEN, (1, ORANGE)),
            width=8,
        ),
        timeseries(
            "Time waiting for a CPU (saturation, PSI)",
            "percentunit",
            prom(
                f"rate(node_pressure_cpu_waiting_seconds_total{{{NODE}}}[$__rate_interval])",
                "{{instance}}",
            ),
            description=(
                "Share of time some task waited for a CPU (pressure stall information; empty "
                "on kernels without PSI)."
            ),
            width=8,
        ),
    ]


def memory() -> list[dict[str, Any]]:
    return [
        row("Memory: utilisation, saturation, errors"),
        timeseries(
            "Memory available (utilisation)",
            "percentunit",
            prom(MEMORY_AVAILABLE, "{{instance}}"),
            threshold_line("host_memory_available_warning", "warning"),
            threshold_line("host_memory_available_critical", "critical (pages)"),
            description=(
                "MemAvailable over MemTotal (MLHostMemoryLow: a warning under the first line "
                "for 10 minutes, a page under the second for 5)."
            ),
            thresholds=memory_steps(),
            width=8,
        ),
        timeseries(
            "Swapping and major page faults (saturation)",
            "ops",
            prom(
                f"rate(node_vmstat_pswpin{{{NODE}}}[$__rate_interval]) "
                f"+ rate(node_vmstat_pswpout{{{NODE}}}[$__rate_interval])",
                "pages swapped {{instance}}",
            ),
            prom(
                f"rate(node_vmstat_pgmajfault{{{NODE}}}[$__rate_interval])",
                "major faults {{instance}}",
            ),
            description=(
                "Pages swapped in and out, and page faults that had to read the disk, per "
                "second: memory too small for what runs."
            ),
            width=8,
        ),
        timeseries(
            "OOM kills on the host (errors)",
            "short",
            prom(f"increase(node_vmstat_oom_kill{{{NODE}}}[15m])", "{{instance}}"),
            description=(
                "Processes the kernel killed for lack of memory over 15 minutes, in or out of "
                "a container (MLOomKill; the containers row names the container)."
            ),
            thresholds=steps(GREEN, (1, RED)),
            width=8,
        ),
    ]


def disks() -> list[dict[str, Any]]:
    return [
        row("Disks: utilisation, saturation, errors"),
        timeseries(
            "Filesystem free (utilisation)",
            "percentunit",
            prom(FS_FREE, "{{mountpoint}} {{instance}}"),
            threshold_line("host_disk_free_ratio", "alert threshold"),
            description=(
                "Free share of each real filesystem (MLHostDiskSpaceLow under the threshold "
                "for 15 minutes)."
            ),
            thresholds=alert_steps("host_disk_free_ratio", low_is_bad=True, color=ORANGE),
        ),
        timeseries(
            "Time until full at the 6-hour trend",
            "s",
            prom(TIME_UNTIL_FULL, "{{mountpoint}} {{instance}}"),
            threshold_line("host_disk_full_within_seconds", "alert threshold (pages)"),
            description=(
                "For the filesystems losing space, when the last 6 hours' trend reaches zero "
                "free bytes; empty when none is filling (MLHostDiskFillingUp pages under the "
                "line for 30 minutes)."
            ),
            thresholds=alert_steps("host_disk_full_within_seconds", low_is_bad=True),
        ),
        timeseries(
            "Disk busy (utilisation)",
            "percentunit",
            prom(
                f"rate(node_disk_io_time_seconds_total{{{DISK}}}[$__rate_interval])",
                "{{device}} {{instance}}",
            ),
            description="Share of time each disk had I/O in progress.",
            width=8,
        ),
        timeseries(
            "Disk queue (saturation)",
            "short",
            prom(
                f"rate(node_disk_io_time_weighted_seconds_total{{{DISK}}}[$__rate_interval])",
                "{{device}} {{instance}}",
            ),
            description="Average number of I/O requests in flight or waiting, per disk.",
            width=8,
        ),
        timeseries(
            "Filesystem errors",
            "none",
            prom(f"node_filesystem_device_error{{{FS}}}", "unreadable {{mountpoint}} {{instance}}"),
            prom(f"node_filesystem_readonly{{{FS}}}", "read-only {{mountpoint}} {{instance}}"),
            description=(
                "1 when node-exporter could not read a filesystem's statistics, or when it is "
                "mounted read-only (a filesystem remounted read-only after I/O errors takes no "
                "writes); 0 on a healthy host."
            ),
            thresholds=steps(GREEN, (1, RED)),
            width=8,
        ),
    ]


def network() -> list[dict[str, Any]]:
    return [
        row("Network: utilisation, saturation, errors"),
        timeseries(
            "Network throughput (utilisation)",
            "Bps",
            prom(
                f"rate(node_network_receive_bytes_total{{{NIC}}}[$__rate_interval])",
                "in {{device}} {{instance}}",
            ),
            prom(
                f"rate(node_network_transmit_bytes_total{{{NIC}}}[$__rate_interval])",
                "out {{device}} {{instance}}",
            ),
            description="Bytes per second in and out of each physical interface.",
        ),
        timeseries(
            "Network drops and errors (saturation, errors)",
            "pps",
            *(
                prom(
                    f"rate(node_network_{way}_{what}_total{{{NIC}}}[$__rate_interval])",
                    f"{way} {what} {{{{device}}}} {{{{instance}}}}",
                )
                for what in ("drop", "errs")
                for way in ("receive", "transmit")
            ),
            description=(
                "Packets dropped (queues full) and packets with errors, per second and "
                "interface: 0 on a healthy host."
            ),
        ),
    ]


def containers() -> list[dict[str, Any]]:
    return [
        row("Containers: CPU, memory against the limit, restarts, OOM kills"),
        timeseries(
            "Container CPU",
            "short",
            prom(
                f"sum by (name) (rate(container_cpu_usage_seconds_total{{{CONTAINER}}}"
                f"[$__rate_interval]))",
                "{{name}}",
            ),
            description="CPU used by each container, in cores (1 is one core all the time).",
            width=8,
        ),
        timeseries(
            "Container CPU throttled (saturation)",
            "percentunit",
            prom(
                f"sum by (name) (rate(container_cpu_cfs_throttled_periods_total{{{CONTAINER}}}"
                f"[$__rate_interval])) / sum by (name) "
                f"(rate(container_cpu_cfs_periods_total{{{CONTAINER}}}[$__rate_interval]))",
                "{{name}}",
            ),
            description=(
                "Share of scheduling periods in which a container hit its CPU limit (only "
                "containers with a CPU limit; compose sets none by default)."
            ),
            width=8,
        ),
        timeseries(
            "Container memory (working set)",
            "bytes",
            prom(f"sum by (name) (container_memory_working_set_bytes{{{CONTAINER}}})", "{{name}}"),
            description="Memory each container uses that the kernel cannot simply reclaim.",
            width=8,
        ),
        timeseries(
            "Container memory against its limit",
            "percentunit",
            prom(CONTAINER_MEMORY_OF_LIMIT, "{{name}}"),
            threshold_line("container_memory_limit_ratio", "alert threshold"),
            description=(
                "Working set over the container's memory limit, for containers that have one "
                "(MLContainerMemoryNearLimit over the threshold for 15 minutes; at the limit "
                "the kernel kills it)."
            ),
            thresholds=alert_steps("container_memory_limit_ratio", low_is_bad=False),
            width=8,
        ),
        timeseries(
            "Container restarts (15 minutes)",
            "short",
            prom(CONTAINER_RESTARTS, "{{name}}"),
            threshold_line("container_restarts_15m", "alert threshold"),
            description=(
                "Restarts of each container over the last 15 minutes, by Docker's restart "
                "policy or a recreation (MLContainerRestarting above the threshold)."
            ),
            thresholds=alert_steps("container_restarts_15m", low_is_bad=False, color=ORANGE),
            decimals=0,
            width=8,
        ),
        timeseries(
            "Container OOM kills (15 minutes)",
            "short",
            prom(
                f"sum by (name) (increase(container_oom_events_total{{{CONTAINER}}}[15m]))",
                "{{name}}",
            ),
            description=(
                "Processes of each container killed for lack of memory over 15 minutes (MLOomKill)."
            ),
            thresholds=steps(GREEN, (1, RED)),
            width=8,
        ),
        timeseries(
            "Container network",
            "Bps",
            prom(
                f"sum by (name) (rate(container_network_receive_bytes_total{{{CONTAINER}}}"
                f"[$__rate_interval]))",
                "in {{name}}",
            ),
            prom(
                f"sum by (name) (rate(container_network_transmit_bytes_total{{{CONTAINER}}}"
                f"[$__rate_interval]))",
                "out {{name}}",
            ),
            description="Bytes per second in and out of each container.",
            width=24,
        ),
    ]


def host() -> list[dict[str, Any]]:
    return [*at_a_glance(), *cpu(), *memory(), *disks(), *network(), *containers()]
