"""Repository tooling, not shipped in the wheel: benchmarks, load tests, scale data, screenshots
and a throwaway PostgreSQL server for the tests."""
