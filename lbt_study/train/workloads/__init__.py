"""Built-in workloads and a copyable template."""
