"""The NEPSE protocol: paths, paging, answer shapes."""
