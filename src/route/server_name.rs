//! stub
use std::borrow::Cow;
pub fn normalize_host(raw: &str) -> Result<Cow<'_, str>, ()> {
    let h = raw.split(':').next().unwrap_or("");
    Ok(Cow::Owned(h.to_ascii_lowercase()))
}
pub struct ServerNameTable {
    names: Vec<Vec<String>>,
}
impl ServerNameTable {
    pub fn new(servers: &[Vec<String>]) -> Result<Self, String> {
        Ok(ServerNameTable {
            names: servers.to_vec(),
        })
    }
    pub fn find(&self, host: &str) -> usize {
        self.names
            .iter()
            .position(|n| n.iter().any(|x| x == host))
            .unwrap_or(0)
    }
}
