//! `imagefactoryd`: the imagefactory REST API daemon.

fn main() {
    if std::env::args().nth(1).as_deref() == Some(imagefactory::worker::WORKER_ARG) {
        std::process::exit(imagefactory::worker::worker_main());
    }
    std::process::exit(imagefactory::daemon::main());
}
