//! What every search shares, and nothing that runs a search: loading what a config names
//! ([`setup`]), what a run reports ([`outcome`]), the run's bookkeeping ([`ledger`]: counters,
//! checkpoint cadence, stop conditions, progress) with its `history.csv` ([`history`]), the
//! one way to end a run early ([`stop`]) and the files a finished run leaves ([`folder`]).
//! Plain code with no actors; no module here uses a module of this crate outside `run`.

pub mod folder;
pub mod history;
pub mod ledger;
pub mod outcome;
pub mod setup;
pub mod stop;
