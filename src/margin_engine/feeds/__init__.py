"""Price feeds: file replay, an in-process queue and NATS JetStream, one protocol."""
