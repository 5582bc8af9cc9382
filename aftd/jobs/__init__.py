"""Jobs: the model and its states, the durable store, and the runner."""
