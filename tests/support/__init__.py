"""Test-only helpers shared by the test folders: servers, clusters, processes, key material."""
