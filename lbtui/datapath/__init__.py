"""The kernel side: compiling, loading and attaching the XDP datapath (bpf/)."""
