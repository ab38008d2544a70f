"""One module per API dialect: a pure translation between its wire format and our domain."""
