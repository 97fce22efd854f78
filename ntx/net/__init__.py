"""The network: one HTTP client (httpx), TLS verified, proxies from the environment."""
