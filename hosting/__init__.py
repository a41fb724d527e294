"""Running servers and services of ours: settings, security, interceptors, errors, telemetry,
the event loop. The store and both example services use it; clients of the store do not."""
