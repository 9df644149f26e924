"""The durable message queue: on-disk store and the entries the scheduler works on."""
