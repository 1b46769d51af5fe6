//! What every search shares, and nothing that runs a search: loading what a config names
//! ([`setup`]), what a run reports ([`outcome`]), its `history.csv` ([`history`]) and the
//! files a finished run leaves ([`folder`]). Plain code with no actors; no module here uses a
//! module of this crate outside `run`.

pub mod folder;
pub mod history;
pub mod outcome;
pub mod setup;
