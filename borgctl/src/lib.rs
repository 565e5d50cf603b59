//! borgctl's pieces that tests reuse: rendering API messages as tables and JSON.

pub mod bench;
pub mod render;
