//! stub
#[derive(Debug)]
pub enum LocationPattern {
    Exact(String),
    Prefix {
        path: String,
        no_regex: bool,
    },
    Regex {
        source: String,
        re: regex::Regex,
        case_insensitive: bool,
    },
}
impl LocationPattern {
    pub fn parse(s: &str) -> Result<Self, String> {
        Ok(LocationPattern::Prefix {
            path: s.to_string(),
            no_regex: false,
        })
    }
    pub fn is_regex(&self) -> bool {
        matches!(self, LocationPattern::Regex { .. })
    }
    pub fn prefix(&self) -> Option<&str> {
        match self {
            LocationPattern::Exact(p) | LocationPattern::Prefix { path: p, .. } => Some(p),
            _ => None,
        }
    }
}
pub enum LocationMatch {
    Found(usize),
    RedirectSlash(usize),
    NotFound,
}
#[derive(Debug)]
pub struct LocationTable {
    locs: Vec<(LocationPattern, bool)>,
}
impl LocationTable {
    pub fn new(locs: Vec<(LocationPattern, bool)>) -> Self {
        LocationTable { locs }
    }
    pub fn find(&self, path: &str) -> LocationMatch {
        let mut best = None;
        let mut bl = 0;
        for (i, (l, _)) in self.locs.iter().enumerate() {
            if let Some(p) = l.prefix() {
                if path.starts_with(p) && (best.is_none() || p.len() > bl) {
                    best = Some(i);
                    bl = p.len();
                }
            }
        }
        best.map_or(LocationMatch::NotFound, LocationMatch::Found)
    }
}
