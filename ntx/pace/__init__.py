"""Pacing: the proactive throttle, the `--rate` bucket, shared pauses, the retry policy,
the circuit breaker and `--sleep auto`, built together as one `Pace`."""
