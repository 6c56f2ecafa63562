// outpost-agent: a thin entry point over outpost::agent (agent/cli/cli.hpp).
#include "agent/cli/cli.hpp"

int main(int argc, char** argv) { return outpost::agent::agent_main(argc, argv); }
