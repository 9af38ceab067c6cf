"""Against a real etcd: the JSON-gateway client and the server launcher."""
