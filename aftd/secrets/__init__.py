"""Secret resolution: the provider chain (vault, file, env), caching and redaction."""
