#include "cli/serve_command.h"

#include <algorithm>
#include <boost/json.hpp>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <sstream>
#include <thread>

#include "cli/cli.h"
#include "cli/cli_support.h"
#include "fhir/cds_auth.h"
#include "fhir/fhir_api.h"
#include "server/api.h"
#include "server/audit_log.h"
#include "server/client_address.h"
#include "server/http_server.h"
#include "server/log.h"
#include "server/metrics.h"
#include "server/router.h"
#include "server/static_files.h"
#include "server/timed_event_store.h"
#include "server/webhook_sender.h"
#include "service/background_worker.h"
#include "service/service.h"
#include "service/service_store.h"
#include "store/sqlite/sqlite_event_store.h"

namespace isoguard {
namespace {

namespace json = boost::json;

std::string StoreUrl(const std::string& db) { return db.empty() ? "isoguard.db" : db; }

Result<std::string> ReadFile(const std::filesystem::path& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return Error::Internal("cannot read " + path.string());
  std::ostringstream text;
  text << in.rdbuf();
  return text.str();
}

// The stores every command here needs, opened in order (the service store's SQLite tables
// live in the event store's file, which must exist first).
struct Stores {
  std::unique_ptr<store::EventStore> events;
  std::unique_ptr<service::ServiceStore> service;
};

Result<Stores> OpenStores(const std::string& db, const ParseOptions& parse) {
  Stores s;
  store::StoreOptions options;
  options.parse = parse;
  auto events = store::OpenEventStore(StoreUrl(db), options);
  if (!events.ok()) return events.error();
  s.events = std::move(*events);
  auto svc = service::OpenServiceStore(StoreUrl(db));
  if (!svc.ok()) return svc.error();
  s.service = std::move(*svc);
  return s;
}

json::object TokenJson(const service::IssuedToken& t) {
  return json::object{{"account_id", t.record.account_id},
                      {"token", t.token},
                      {"token_id", t.record.id},
                      {"expires_at", FormatUtc(t.record.expires_at)}};
}

}  // namespace

int RunServe(const Rulebook& rulebook, const ParseOptions& parse, const ServeOptions& options,
             std::ostream& out, std::ostream& err) {
  server::Logger logger(2, options.quiet ? server::LogLevel::kWarn : server::LogLevel::kInfo);
  server::Metrics metrics;
  auto proxies = server::ParseTrustedProxies(options.trusted_proxies);
  if (!proxies.ok()) {
    Error e = proxies.error();
    e.field = "--trusted-proxy";
    return Fail(err, e);
  }
  auto stores = OpenStores(options.db, parse);
  if (!stores.ok()) return Fail(err, stores.error());
  auto timed = std::make_unique<server::TimedEventStore>(std::move(stores->events), metrics);
  auto openapi = ReadFile(std::filesystem::path(options.data_dir) / "api" / "openapi.json");
  if (!openapi.ok()) return Fail(err, openapi.error());

  service::ServiceOptions service_options;
  service_options.parse = parse;
  service::Service svc(*timed, *stores->service, rulebook, service_options);
  service::BackgroundWorker worker(svc, {}, [&logger](const std::string& message) {
    logger.Error("background work failed", {{"error", message}});
  });
  svc.SetAppendListener([&worker] { worker.Kick(); });
  svc.SetWebhookPoster([](const std::string& url, const std::string& body,
                          const std::vector<std::pair<std::string, std::string>>& headers) {
    return server::PostJson(url, body, headers, std::chrono::seconds(5));
  });
  server::AuditLog audit(*stores->service, logger, {});

  server::ApiEnvironment env{svc, audit, metrics, logger, {}, std::move(*openapi)};
  service::ServiceStore* service_store = stores->service.get();
  store::EventStore* event_store = timed.get();
  env.ready = [service_store, event_store]() -> Status {
    if (auto st = service_store->Ping(); !st.ok()) return st;
    auto probe = event_store->ReadState("readyz-probe");
    if (!probe.ok()) return probe.error();
    return {};
  };
  server::Router router;
  auto routes = server::AddApiRoutes(router, env);
  // FHIR R4, CDS Hooks and $rems-etasu (docs/fhir.md), with the codes of knowledge/fhir.toml.
  auto fhir_knowledge = fhir::LoadFhirKnowledge(options.data_dir);
  if (!fhir_knowledge.ok()) return Fail(err, fhir_knowledge.error());
  fhir::FhirOptions fhir_options;
  fhir_options.knowledge = std::move(*fhir_knowledge);
  auto fetcher = fhir::MakeHttpFetcher(options.fhir_ca_file);
  if (!fetcher.ok()) return Fail(err, fetcher.error());
  fhir_options.fetch = std::move(*fetcher);
  if (!options.cds_clients.empty()) {
    auto clients = fhir::CdsClients::Load(options.cds_clients);
    if (!clients.ok()) return Fail(err, clients.error());
    // A client acting for no account would be refused at every call: refused at start instead.
    for (const std::string& id : (*clients)->AccountIds()) {
      auto account = stores->service->GetAccount(id);
      if (!account.ok()) {
        return Fail(err,
                    Error::BadInput("no account '" + id + "' (" + account.error().message + ")",
                                    options.cds_clients));
      }
      if (account->role != service::Role::kPrescriber &&
          account->role != service::Role::kClinicStaff) {
        return Fail(
            err, Error::BadInput("account '" + id + "' is not a prescriber or clinic staff account",
                                 options.cds_clients));
      }
    }
    fhir_options.cds_clients = std::move(*clients);
  }
  auto fhir_routes = fhir::AddFhirRoutes(router, env, std::move(fhir_options));
  // The web app (web/dist, built by `make build`): served when present; the API alone
  // otherwise.
  auto web = server::StaticFiles::Load(std::filesystem::path(options.data_dir) / "web" / "dist");
  if (web.ok()) {
    server::AddStaticRoutes(router, std::make_shared<const server::StaticFiles>(std::move(*web)));
  } else if (web.error().kind == ErrorKind::kNotFound) {
    logger.Warn("the web app is not built: API only", {{"error", web.error().message}});
  } else {
    return Fail(err, web.error());
  }

  server::ServerOptions so;
  so.listen = options.listen;
  so.tls_cert_file = options.tls_cert;
  so.tls_key_file = options.tls_key;
  so.worker_threads =
      options.workers > 0 ? options.workers : std::max(2u, 2 * std::thread::hardware_concurrency());
  so.max_queued_requests = options.max_queue;
  so.max_body_bytes = server::kMaxApiBodyBytes;
  so.trusted_proxies = std::move(*proxies);
  auto http = server::HttpServer::Start(so, router, metrics, logger);
  if (!http.ok()) return Fail(err, http.error());
  (*http)->StopOnSignals();
  const std::string scheme = options.tls_cert.empty() ? "http" : "https";
  std::string host = options.listen.substr(0, options.listen.rfind(':'));
  out << "isoguard: serving on " << scheme << "://" << host << ":" << (*http)->port()
      << " (stop with Ctrl-C or SIGTERM)" << std::endl;
  (*http)->Wait();
  // In-flight requests are answered; now the background work and the audit, then the stores
  // (their destructors commit whatever is queued).
  worker.Stop();
  audit.Stop();
  out << "isoguard: stopped" << std::endl;
  return kExitOk;
}

int RunAdmin(const Rulebook& rulebook, const ParseOptions& parse, const AdminOptions& o,
             std::istream& in, std::ostream& out, std::ostream& err) {
  auto stores = OpenStores(o.db, parse);
  if (!stores.ok()) return Fail(err, stores.error());
  service::ServiceOptions service_options;
  service_options.parse = parse;
  service::Service svc(*stores->events, *stores->service, rulebook, service_options);
  const auto ttl = std::chrono::hours(24 * std::max(1, o.ttl_days));

  if (o.command == "create-org") {
    service::Organisation org;
    org.id = o.id;
    auto kind = service::ParseOrgKind(o.kind);
    if (!kind) return Fail(err, Error::BadInput("must be clinic, pharmacy or program", "--kind"));
    org.kind = *kind;
    org.name = o.name.empty() ? o.id : o.name;
    org.jurisdiction = o.jurisdiction;
    if (!ParseJurisdiction(org.jurisdiction)) {
      return Fail(err, Error::BadInput("must be US, EU or UK", "--jurisdiction"));
    }
    if (auto st = svc.CreateOrganisation(nullptr, org); !st.ok()) return Fail(err, st.error());
    out << json::serialize(json::object{{"id", org.id}, {"kind", o.kind}}) << "\n";
    return kExitOk;
  }
  if (o.command == "create-user") {
    service::Account account;
    account.id = o.id;
    account.org_id = o.org;
    auto role = service::ParseRole(o.role);
    if (!role) {
      return Fail(err,
                  Error::BadInput("must be prescriber, clinic_staff, pharmacist, patient or admin",
                                  "--role"));
    }
    account.role = *role;
    account.name = o.name;
    account.patient_id = o.patient;
    std::string password;
    if (o.password_stdin) std::getline(in, password);
    auto issued = svc.CreateAccount(nullptr, account, password, ttl);
    if (!issued.ok()) return Fail(err, issued.error());
    out << json::serialize(TokenJson(*issued)) << "\n";
    return kExitOk;
  }
  if (o.command == "token") {
    auto issued =
        svc.IssueToken(nullptr, o.id, "api", o.label.empty() ? "from the CLI" : o.label, ttl);
    if (!issued.ok()) return Fail(err, issued.error());
    out << json::serialize(TokenJson(*issued)) << "\n";
    return kExitOk;
  }
  if (o.command == "disable-user" || o.command == "enable-user") {
    const bool disabled = o.command == "disable-user";
    if (auto st = svc.SetAccountDisabled(nullptr, o.id, disabled); !st.ok()) {
      return Fail(err, st.error());
    }
    out << json::serialize(json::object{{"account_id", o.id}, {"disabled", disabled}}) << "\n";
    return kExitOk;
  }
  if (o.command == "project") {
    // What `serve` would do in the background when it starts on an imported store, done
    // before serving: every entry not yet projected, in passes, with progress on stderr.
    int64_t total = 0;
    for (;;) {
      auto n = svc.Project(100000);
      if (!n.ok()) return Fail(err, n.error());
      if (*n == 0) break;
      total += *n;
      err << "\risoguard admin project: " << total << " entries" << std::flush;
    }
    if (total > 0) err << "\n";
    out << json::serialize(json::object{{"projected", total}}) << "\n";
    return kExitOk;
  }
  if (o.command == "link-patients") {
    // Every patient of the store not in any clinic's care yet goes to --org (an imported
    // cohort joining a clinic), or the first --limit of them in the order they joined.
    auto org = stores->service->GetOrganisation(o.org);
    if (!org.ok()) return Fail(err, org.error());
    if (org->kind != service::OrgKind::kClinic) {
      return Fail(err, Error::BadInput("patients are linked to a clinic", "--org"));
    }
    int64_t linked = 0;
    std::vector<service::CareLink> batch;
    auto flush = [&]() -> Status {
      auto n = stores->service->LinkNewPatients(batch);
      if (!n.ok()) return n.error();
      linked += *n;
      batch.clear();
      return {};
    };
    bool done = false;  // --limit reached
    auto link = [&](const std::string& patient_id) -> Status {
      service::CareLink l;
      l.patient_id = patient_id;
      l.clinic_id = o.org;
      l.prescriber_id = o.prescriber;
      l.since = svc.Now();
      batch.push_back(std::move(l));
      const auto room = o.limit > 0 ? std::min<int64_t>(5000, o.limit - linked) : 5000;
      if (static_cast<int64_t>(batch.size()) < room) return {};
      Status st = flush();
      done = o.limit > 0 && linked >= o.limit;
      return st;
    };
    if (auto* sqlite = dynamic_cast<store::SqliteEventStore*>(stores->events.get())) {
      // The streams without reading their entries.
      int64_t after = 0;
      for (;;) {
        auto page = sqlite->ListStreams(after, store::kMaxReadAllEntries);
        if (!page.ok()) return Fail(err, page.error());
        if (page->empty() || done) break;
        for (const auto& s : *page) {
          if (auto st = link(s.patient_id); !st.ok()) return Fail(err, st.error());
          after = s.position;
          if (done) break;
        }
      }
    } else {
      int64_t position = 0;
      for (;;) {
        auto entries = stores->events->ReadAll(position, store::kMaxReadAllEntries);
        if (!entries.ok()) return Fail(err, entries.error());
        if (entries->empty() || done) break;
        for (const store::StoredEntry& e : *entries) {
          position = e.position;
          if (e.version != 1) continue;
          if (auto st = link(e.patient_id); !st.ok()) return Fail(err, st.error());
          if (done) break;
        }
      }
    }
    if (auto st = flush(); !st.ok()) return Fail(err, st.error());
    out << json::serialize(json::object{{"clinic", o.org}, {"linked", linked}}) << "\n";
    return kExitOk;
  }
  return Fail(err, Error::BadInput("unknown admin command '" + o.command + "'"));
}

}  // namespace isoguard
