//! Integration tests of `taskflow-proto` against frames captured from the real JS peers.

mod js_wire_fixtures;
