"""The HTTPS REST API (aiohttp)."""
