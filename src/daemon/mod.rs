//! The daemon that owns every host resource and serves the CLI over a Unix socket.
