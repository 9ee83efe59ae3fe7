"""The background worker: periodic jobs and queues, run in the server process or on its own."""
