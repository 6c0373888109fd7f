"""The observe layer: read the kernel, never own an app. stats (per-EtherType/protocol/verdict
rates), monitor (XDP tracepoints), exporter (Prometheus), trace (bpf_printk)."""
