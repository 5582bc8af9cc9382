"""Virtual filesystems: the backend protocol, the backends, the registry and the copy engine."""
