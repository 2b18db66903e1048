//! TEMPORARY stubs until the routing branch lands.
pub mod location;
pub mod server_name;
pub mod template;
pub mod uri;
