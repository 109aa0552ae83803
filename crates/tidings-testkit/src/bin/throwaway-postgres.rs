//! Starts a throwaway PostgreSQL cluster that lives as long as the process `--watch PID` and prints
//! `export TIDINGS_TEST_POSTGRES_URL=…` for a shell to `eval`.

fn main() -> std::process::ExitCode {
    let mut args = std::env::args().skip(1);
    let watch = match (
        args.next().as_deref(),
        args.next().map(|pid| pid.parse::<u32>()),
    ) {
        (Some("--watch"), Some(Ok(pid))) => pid,
        _ => {
            eprintln!("usage: throwaway-postgres --watch PID");
            return std::process::ExitCode::from(2);
        }
    };
    match tidings_testkit::postgres::Cluster::start_new(Some(watch)) {
        Ok(cluster) => {
            println!(
                "export {}={}",
                tidings_testkit::postgres::URL_VAR,
                cluster.detach()
            );
            std::process::ExitCode::SUCCESS
        }
        Err(error) => {
            eprintln!("cannot start PostgreSQL: {error}");
            std::process::ExitCode::FAILURE
        }
    }
}
