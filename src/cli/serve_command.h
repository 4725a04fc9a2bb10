// `isoguard serve` (the HTTP service) and `isoguard admin ...` (accounts, from the command
// line, to bootstrap a service: the first admin account can only be made here).
//
// serve: opens the event store and the service store in the database --db names, starts the
//   background worker (projections, expired authorizations, reminders), the access audit
//   writer and the HTTP server, and runs until SIGTERM or SIGINT, then stops gracefully: no
//   new connections, in-flight requests answered, the audit flushed, the store closed.
// admin create-org / create-user / token / disable-user / enable-user / link-patients: print
//   JSON; a new token is printed once and never again.
#pragma once

#include <iosfwd>
#include <string>

#include "domain/record_parser.h"
#include "rules/rulebook.h"

namespace isoguard {

struct ServeOptions {
  std::string db;
  std::string listen = "127.0.0.1:8080";
  std::string tls_cert, tls_key;
  // CDS Hooks (docs/fhir.md): a PEM bundle trusted for https FHIR servers instead of the system
  // store, and the file of trusted CDS clients (JWT issuers and their keys); empty: none.
  std::string fhir_ca_file;
  std::string cds_clients;
  // Addresses and networks of reverse proxies whose X-Forwarded-For names the client
  // (comma-separated, src/server/client_address.h); empty: none, the header is ignored.
  std::string trusted_proxies;
  unsigned workers = 0;  // 0: two per core
  size_t max_queue = 512;
  std::string data_dir;  // for api/openapi.json
  bool quiet = false;    // no request log lines
};
int RunServe(const Rulebook& rulebook, const ParseOptions& parse, const ServeOptions& options,
             std::ostream& out, std::ostream& err);

struct AdminOptions {
  std::string db;
  std::string command;  // create-org, create-user, token, disable-user, enable-user, link-patients
  std::string id, org, kind, name, jurisdiction, role, patient, prescriber, label;
  bool password_stdin = false;
  int ttl_days = 90;
  int64_t limit = 0;  // link-patients: at most this many (0: all)
};
int RunAdmin(const Rulebook& rulebook, const ParseOptions& parse, const AdminOptions& options,
             std::istream& in, std::ostream& out, std::ostream& err);

}  // namespace isoguard
