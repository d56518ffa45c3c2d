//! The meshsec.io API.
