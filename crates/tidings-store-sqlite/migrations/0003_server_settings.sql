-- Values the server keeps for itself, shared by every node: the key that signs portal sessions.
CREATE TABLE server_settings (
    name TEXT PRIMARY KEY,
    value BLOB NOT NULL
);
