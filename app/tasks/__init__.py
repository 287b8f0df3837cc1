"""The task list's use cases (service), its SQL (repository) and its data shapes."""
