"""Storage suites: every backend in backends.BACKENDS, sync and async, on real stores."""
