"""lunabase ground segment: ingest, archive, alarms, commanding and the client interface."""
