"""HTTP plumbing: middleware, auth, errors as RFC 9457 problems, headers, pagination, waiting."""
