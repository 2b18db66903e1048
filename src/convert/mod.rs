//! `fulcrum convert`: an nginx config becomes the fulcrum TOML that means the same,
//! with a warning for each directive it cannot carry.

pub mod lexer;
pub mod parser;
