// The isoguard command: a thin shell over the rules engine. Parses arguments, loads the
// rulebook and the record, calls the engine, prints JSON. Exit codes: 0 ok, 2 bad input,
// 1 internal error.
#include "cli/cli.h"

#include <unistd.h>

#include <CLI/CLI.hpp>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <map>
#include <memory>
#include <mutex>
#include <sstream>

#include "cli/admin_commands.h"
#include "cli/batch.h"
#include "cli/cli_support.h"
#include "cli/serve_command.h"
#include "cli/store_commands.h"
#include "cli/synth.h"
#include "core/json_writer.h"
#include "core/text.h"
#include "domain/record_parser.h"
#include "rules/dose_planner.h"
#include "rules/evaluate.h"
#include "rules/interactions.h"
#include "rules/rulebook_loader.h"

#ifndef ISOGUARD_DEFAULT_DATA_DIR
#define ISOGUARD_DEFAULT_DATA_DIR "."
#endif

namespace isoguard {
namespace {

// The data directory: --data-dir, else $ISOGUARD_DATA_DIR, else the build's default.
std::string DataDir(const std::string& option) {
  if (!option.empty()) return option;
  if (const char* env = std::getenv("ISOGUARD_DATA_DIR"); env != nullptr && *env != '\0') {
    return env;
  }
  return ISOGUARD_DEFAULT_DATA_DIR;
}

// The rulebook is loaded once per data directory and process (it is immutable).
Result<std::shared_ptr<const Rulebook>> CachedRulebook(const std::string& dir) {
  static std::mutex mu;
  static std::map<std::string, std::shared_ptr<const Rulebook>> cache;
  std::lock_guard lock(mu);
  if (auto it = cache.find(dir); it != cache.end()) return it->second;
  auto loaded = LoadRulebook(dir);
  if (!loaded.ok()) return loaded.error();
  auto shared = std::make_shared<const Rulebook>(std::move(loaded).value());
  cache.emplace(dir, shared);
  return shared;
}

Result<std::string> ReadRecordFile(const std::string& path, size_t max_bytes) {
  std::error_code ec;
  if (path != "-") {
    auto size = std::filesystem::file_size(path, ec);
    if (ec) return Error::BadInput("cannot read the record: " + ec.message(), path);
    if (size > max_bytes) {
      return Error::BadInput("the record is " + std::to_string(size) + " bytes; at most " +
                                 std::to_string(max_bytes) + " are allowed",
                             path);
    }
  }
  std::ifstream file;
  std::istream* in = &std::cin;
  if (path != "-") {
    file.open(path, std::ios::binary);
    if (!file) return Error::BadInput("cannot open the record", path);
    in = &file;
  }
  std::string text;
  char buf[65536];
  while (in->read(buf, sizeof buf) || in->gcount() > 0) {
    text.append(buf, static_cast<size_t>(in->gcount()));
    if (text.size() > max_bytes) {
      return Error::BadInput("the record is larger than " + std::to_string(max_bytes) + " bytes",
                             path);
    }
  }
  return text;
}

Result<Instant> ParseAt(const std::string& at) {
  if (at.empty()) {
    return std::chrono::time_point_cast<std::chrono::milliseconds>(
        std::chrono::system_clock::now());
  }
  auto t = ParseOffsetTime(at);
  if (!t.ok()) return Error::BadInput(t.error().message, "--at");
  return t->instant;
}

ParseOptions MakeParseOptions(const Rulebook& rulebook) {
  ParseOptions options;
  options.is_known_program = [&rulebook](std::string_view id) {
    return rulebook.FindProgram(id) != nullptr;
  };
  return options;
}

struct EvaluateArgs {
  std::string at, program, prescription, batch, record;
};

int RunEvaluate(const Rulebook& rulebook, const EvaluateArgs& args, std::ostream& out,
                std::ostream& err) {
  auto at = ParseAt(args.at);
  if (!at.ok()) return Fail(err, at.error());
  EvaluateOptions options;
  options.at = *at;
  if (!args.program.empty()) {
    if (rulebook.FindProgram(args.program) == nullptr) {
      return Fail(err, Error::NotFound("unknown program '" + args.program + "'", "--program"));
    }
    options.program_id = args.program;
  }
  if (!args.prescription.empty()) options.prescription = args.prescription;

  if (!args.batch.empty()) {
    BatchOptions batch;
    batch.path = args.batch;
    batch.evaluate = options;
    batch.parse = MakeParseOptions(rulebook);
    batch.progress = &err == &std::cerr && isatty(STDERR_FILENO) == 1;
    return RunBatch(rulebook, batch, out, err);
  }
  if (args.record.empty()) {
    return Fail(err, Error::BadInput("a record file is required (or --batch FILE)", "RECORD"));
  }
  ParseOptions parse = MakeParseOptions(rulebook);
  auto text = ReadRecordFile(args.record, parse.limits.max_bytes);
  if (!text.ok()) return Fail(err, text.error());
  auto record = ParseRecord(*text, parse);
  if (!record.ok()) return Fail(err, record.error());
  auto evaluation = Evaluate(rulebook, *record, options);
  if (!evaluation.ok()) return Fail(err, evaluation.error());
  out << EvaluationToJson(*evaluation, *record, false) << "\n";
  return kExitOk;
}

int RunDose(const Rulebook& rulebook, double weight_kg, double mg_per_kg,
            const std::string& product_name, std::optional<double> target, std::ostream& out,
            std::ostream& err) {
  auto product = ParseProduct(product_name);
  if (!product) {
    return Fail(err, Error::BadInput("unknown product '" + product_name +
                                         "' (generic, absorica or absorica_ld)",
                                     "--product"));
  }
  DosePlanRequest request{weight_kg, mg_per_kg, *product, target};
  auto plan = PlanDose(rulebook.knowledge, request);
  if (!plan.ok()) return Fail(err, plan.error());
  out << DosePlanToJson(*plan, *product) << "\n";
  return kExitOk;
}

int RunPrograms(const Rulebook& rulebook, std::ostream& out) {
  std::string text;
  JsonWriter w(text);
  w.BeginArray();
  for (const Program& p : rulebook.programs) {
    w.BeginObject();
    w.Key("id").String(p.id);
    w.Key("title").String(p.title);
    w.Key("jurisdiction").String(ToString(p.jurisdiction));
    w.Key("in_force_from").String(p.in_force_from.ToString());
    w.Key("in_force_until");
    p.in_force_until ? w.String(p.in_force_until->ToString()) : w.Null();
    w.Key("time_zone").String(p.time_zone);
    w.EndObject();
  }
  w.EndArray();
  out << text << "\n";
  return kExitOk;
}

int RunInteractions(const Rulebook& rulebook, const std::vector<std::string>& names,
                    const std::string& atc, std::ostream& out) {
  std::string text;
  JsonWriter w(text);
  w.BeginArray();
  for (const std::string& name : names) {
    w.BeginObject();
    w.Key("name").String(name);
    w.Key("interactions").BeginArray();
    for (const InteractionClass* c : ClassifyMedication(rulebook.knowledge, name, atc)) {
      w.BeginObject();
      w.Key("class").String(c->code);
      w.Key("title").String(c->title);
      w.Key("severity").String(ToString(c->severity));
      w.Key("why").String(c->why);
      w.EndObject();
    }
    w.EndArray();
    w.EndObject();
  }
  w.EndArray();
  out << text << "\n";
  return kExitOk;
}

}  // namespace

int RunCli(const std::vector<std::string>& args, std::ostream& out, std::ostream& err) {
  return RunCli(args, std::cin, out, err);
}

int RunCli(const std::vector<std::string>& args, std::istream& in, std::ostream& out,
           std::ostream& err) {
  CLI::App app{"isoguard: isotretinoin safety-program rules engine"};
  app.require_subcommand(1);
  std::string data_dir;
  app.add_option("--data-dir", data_dir, "Directory holding programs/ and knowledge/");

  EvaluateArgs eval;
  auto* evaluate = app.add_subcommand("evaluate", "May the prescription be dispensed now?");
  evaluate->add_option("--at", eval.at, "Evaluation time, ISO 8601 with offset (default: now)");
  evaluate->add_option("--program", eval.program, "Program id (what-if evaluation)");
  evaluate->add_option("--prescription", eval.prescription, "Prescription id to consider");
  evaluate->add_option("--batch", eval.batch, "NDJSON file: one record per line");
  evaluate->add_option("record", eval.record, "Record file (JSON; - for stdin)");

  double weight_kg = 0, mg_per_kg = 0;
  std::string product = "generic";
  std::optional<double> target;
  auto* dose = app.add_subcommand("dose", "Plan capsules per dose for a weight and mg/kg/day");
  dose->add_option("--weight-kg", weight_kg, "Body weight in kg")->required();
  dose->add_option("--mg-per-kg", mg_per_kg, "Target mg/kg/day")->required();
  dose->add_option("--product", product, "generic, absorica or absorica_ld");
  dose->add_option("--target-mg-per-kg", target, "Cumulative target (low end) in mg/kg");

  auto* programs = app.add_subcommand("programs", "List programs with their in-force dates");

  std::vector<std::string> names;
  std::string atc;
  auto* interactions =
      app.add_subcommand("interactions", "Interaction classes of medications by name");
  interactions->add_option("names", names, "Medication names")->required();
  interactions->add_option("--atc", atc, "An ATC code to match as well");

  SynthOptions synth;
  std::string as_of;
  auto* synth_cmd = app.add_subcommand("synth", "Write a synthetic cohort as NDJSON");
  synth_cmd->add_option("--patients", synth.patients, "Number of patients")->required();
  synth_cmd->add_option("--seed", synth.seed, "Seed (same seed, same cohort)");
  synth_cmd->add_option("--as-of", as_of, "The cohort's 'today' (YYYY-MM-DD)");

  ImportOptions import_options;
  bool import_atomic = false;
  auto* import_cmd = app.add_subcommand("import", "Import NDJSON records into the event store");
  import_cmd->add_option("file", import_options.path, "NDJSON file: one record per line")
      ->required();
  import_cmd->add_option("--db", import_options.db, "sqlite:PATH (default isoguard.db)");
  import_cmd->add_flag("--atomic", import_atomic, "Write nothing if any line is bad");

  std::string store_db = kDefaultDb;
  auto* export_cmd = app.add_subcommand("export", "Write every stream as an NDJSON record");
  export_cmd->add_option("--db", store_db, "sqlite:PATH (default isoguard.db)");
  auto* verify_cmd = app.add_subcommand("verify", "Check the event store's hash chains");
  verify_cmd->add_option("--db", store_db, "sqlite:PATH (default isoguard.db)");

  auto* rebuild_cmd =
      app.add_subcommand("rebuild", "Recompute every patient's current state from the log");
  rebuild_cmd->add_option("--db", store_db,
                          "sqlite:PATH or postgresql://... (default isoguard.db)");

  EraseOptions erase;
  auto* erase_cmd = app.add_subcommand(
      "erase", "Crypto-shred one patient (right to erasure): destroy the patient's key");
  erase_cmd->add_option("--patient", erase.patient_id, "Patient id")->required();
  erase_cmd->add_option("--db", store_db, "sqlite:PATH or postgresql://... (default isoguard.db)");
  erase_cmd->add_option("--actor", erase.actor, "Who erases, for the audit (default: $USER)");
  erase_cmd->add_flag("--yes", erase.confirmed, "Do not ask for confirmation");

  std::string backup_to;
  auto* backup_cmd = app.add_subcommand("backup", "A consistent online copy of the store");
  backup_cmd->add_option("--db", store_db, "sqlite:PATH or postgresql://... (default isoguard.db)");
  backup_cmd->add_option("--to", backup_to, "File to write (never overwritten)")->required();

  std::string restore_from;
  auto* restore_cmd = app.add_subcommand("restore", "Bring a backup back as a new store");
  restore_cmd->add_option("--from", restore_from, "Backup file")->required();
  restore_cmd->add_option("--db", store_db,
                          "sqlite:PATH or postgresql://... (default isoguard.db)");

  ServeOptions serve;
  auto* serve_cmd = app.add_subcommand("serve", "Serve the HTTP API");
  serve_cmd->add_option("--db", store_db, "sqlite:PATH or postgresql://... (default isoguard.db)");
  serve_cmd->add_option("--listen", serve.listen, "host:port (default 127.0.0.1:8080)");
  serve_cmd->add_option("--tls-cert", serve.tls_cert, "PEM certificate chain (with --tls-key)");
  serve_cmd->add_option("--tls-key", serve.tls_key, "PEM private key (with --tls-cert)");
  serve_cmd->add_option("--fhir-ca-file", serve.fhir_ca_file,
                        "PEM CA bundle trusted for https FHIR servers (default: the system's)");
  serve_cmd->add_option("--cds-clients", serve.cds_clients,
                        "TOML file of the CDS clients trusted by their JWT (docs/fhir.md)");
  serve_cmd->add_option("--trusted-proxy", serve.trusted_proxies,
                        "Reverse proxies (addresses or networks, comma-separated) whose "
                        "X-Forwarded-For names the client (default: none)");
  serve_cmd->add_option("--workers", serve.workers, "Handler threads (default two per core)");
  serve_cmd->add_option("--max-queue", serve.max_queue,
                        "Requests waiting for a handler before 503 (default 512)");
  serve_cmd->add_flag("--quiet", serve.quiet, "No log line per request");

  AdminOptions admin;
  auto* admin_cmd = app.add_subcommand("admin", "Accounts and organisations of the service");
  admin_cmd->require_subcommand(1);
  admin_cmd->add_option("--db", store_db, "sqlite:PATH or postgresql://... (default isoguard.db)");
  auto* create_org = admin_cmd->add_subcommand("create-org", "Add a clinic, pharmacy or program");
  create_org->add_option("--id", admin.id, "Organisation id")->required();
  create_org->add_option("--kind", admin.kind, "clinic, pharmacy or program")->required();
  create_org->add_option("--name", admin.name, "Display name");
  create_org->add_option("--jurisdiction", admin.jurisdiction, "US, EU or UK")->required();
  auto* create_user = admin_cmd->add_subcommand("create-user", "Add an account; prints its token");
  create_user->add_option("--id", admin.id, "Account id")->required();
  create_user->add_option("--org", admin.org, "Organisation id")->required();
  create_user
      ->add_option("--role", admin.role, "prescriber, clinic_staff, pharmacist, patient or admin")
      ->required();
  create_user->add_option("--name", admin.name, "Display name");
  create_user->add_option("--patient", admin.patient, "The patient (role patient)");
  create_user->add_flag("--password-stdin", admin.password_stdin,
                        "Read a password for web sign-in from standard input");
  create_user->add_option("--ttl-days", admin.ttl_days, "Token lifetime in days (default 90)");
  auto* token = admin_cmd->add_subcommand("token", "Issue a new API token for an account");
  token->add_option("--id", admin.id, "Account id")->required();
  token->add_option("--label", admin.label, "What the token is for");
  token->add_option("--ttl-days", admin.ttl_days, "Token lifetime in days (default 90)");
  auto* disable_user = admin_cmd->add_subcommand("disable-user", "Disable an account");
  disable_user->add_option("--id", admin.id, "Account id")->required();
  auto* enable_user = admin_cmd->add_subcommand("enable-user", "Enable an account again");
  enable_user->add_option("--id", admin.id, "Account id")->required();
  auto* link_patients = admin_cmd->add_subcommand(
      "link-patients", "Put every patient not yet in a clinic's care in this clinic's");
  link_patients->add_option("--org", admin.org, "Clinic id")->required();
  link_patients->add_option("--prescriber", admin.prescriber, "The patients' prescriber");
  link_patients
      ->add_option("--limit", admin.limit,
                   "Link at most this many (the first not yet linked, in the order they "
                   "joined the store)")
      ->check(CLI::Range(int64_t{1}, int64_t{1} << 40));
  admin_cmd->add_subcommand("project",
                            "Bring the service's read models (authorizations, notifications, "
                            "the pregnancy registry) up to the store's last entry");

  std::vector<std::string> reversed(args.rbegin(), args.rend());
  try {
    app.parse(reversed);
  } catch (const CLI::CallForHelp& e) {
    app.exit(e, out, err);
    return kExitOk;
  } catch (const CLI::CallForAllHelp& e) {
    app.exit(e, out, err);
    return kExitOk;
  } catch (const CLI::ParseError& e) {
    err << "isoguard: " << e.what() << "\n";
    return kExitBadInput;
  }

  try {
    if (synth_cmd->parsed()) {
      if (!as_of.empty()) {
        auto d = ParseDate(as_of);
        if (!d.ok()) return Fail(err, Error::BadInput(d.error().message, "--as-of"));
        synth.as_of = *d;
      }
      if (synth.patients > 100'000'000) {
        return Fail(err, Error::BadInput("at most 100000000 patients", "--patients"));
      }
      auto status = WriteSynthCohort(synth, out);
      if (!status.ok()) return Fail(err, status.error());
      out.flush();
      return kExitOk;
    }
    if (export_cmd->parsed()) return RunExport(store_db, out, err);
    if (verify_cmd->parsed()) return RunVerify(store_db, out, err);
    if (rebuild_cmd->parsed()) return RunRebuild(store_db, out, err);
    if (erase_cmd->parsed()) {
      erase.db = store_db;
      return RunErase(erase, in, out, err);
    }
    if (backup_cmd->parsed()) return RunBackup(store_db, backup_to, out, err);
    if (restore_cmd->parsed()) return RunRestore(restore_from, store_db, out, err);
    auto rulebook = CachedRulebook(DataDir(data_dir));
    if (!rulebook.ok()) {
      Error e = rulebook.error();
      e.kind = ErrorKind::kInternal;  // the installation's data is broken, not the input
      return Fail(err, e);
    }
    if (import_cmd->parsed()) {
      import_options.atomic = import_atomic;
      import_options.parse = MakeParseOptions(**rulebook);
      import_options.progress = &err == &std::cerr && isatty(STDERR_FILENO) == 1;
      return RunImport(import_options, err);
    }
    if (serve_cmd->parsed()) {
      serve.db = store_db;
      serve.data_dir = DataDir(data_dir);
      return RunServe(**rulebook, MakeParseOptions(**rulebook), serve, out, err);
    }
    if (admin_cmd->parsed()) {
      admin.db = store_db;
      for (auto* sub : admin_cmd->get_subcommands()) admin.command = sub->get_name();
      return RunAdmin(**rulebook, MakeParseOptions(**rulebook), admin, in, out, err);
    }
    if (evaluate->parsed()) return RunEvaluate(**rulebook, eval, out, err);
    if (dose->parsed()) return RunDose(**rulebook, weight_kg, mg_per_kg, product, target, out, err);
    if (programs->parsed()) return RunPrograms(**rulebook, out);
    if (interactions->parsed()) return RunInteractions(**rulebook, names, atc, out);
  } catch (const std::exception& e) {
    err << "isoguard: internal error: " << e.what() << "\n";
    return kExitInternal;
  }
  return kExitInternal;
}

}  // namespace isoguard
