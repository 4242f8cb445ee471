"""Everything that writes on a schedule: daily aggregates, maintenance, retention, purging,
retraining and saving alerts."""
