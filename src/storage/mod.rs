//! Files on disk: walking the sources, and the confined destination tree with
//! temporary files renamed into place.

pub mod dest;
pub mod jobs;
pub mod journal;
pub mod pieces;
pub mod walk;
