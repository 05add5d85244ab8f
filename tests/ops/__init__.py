"""Tests of the operations pieces: alert rules, the Grafana dashboard, compose, a real Prometheus."""
