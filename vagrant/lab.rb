# The hello-servicemesh lab's helpers for the Vagrantfile: settings (vagrant.yml +
# MESH_*), the provider, the profile (python -m meshlab profile), the docker
# provider's API, image and network, and the state file scripts/lab reads (its
# shape: meshlab/labstate.py). Computed once per Vagrant process.
require "fileutils"
require "json"
require "open3"
require "pathname"
require "yaml"

# Everything the definition below needs, computed once per Vagrant process.
module HelloServicemeshLab
  ROOT = File.expand_path("..", __dir__) unless const_defined?(:ROOT)
  VM_PROVIDERS = %w[virtualbox libvirt].freeze unless const_defined?(:VM_PROVIDERS)

  module_function

  def say(msg)
    return if (@said ||= {})[msg]
    @said[msg] = true
    $stdout.puts "\e[1mhello-servicemesh:\e[0m #{msg}"
    $stdout.flush
  end

  def fail!(msg)
    abort "\e[1;31mhello-servicemesh:\e[0m #{msg}"
  end

  # The Vagrant subcommand (`up`, `provision`, ...): the first non-option argument.
  def command
    ARGV.find { |a| !a.start_with?("-") }
  end

  # Commands that create, boot or provision machines: they check and decide things.
  def acting?
    %w[up provision reload resume].include?(command)
  end

  def dotfile_dir
    Pathname.new(File.expand_path(ENV["VAGRANT_DOTFILE_PATH"] || ".vagrant", ROOT))
  end

  def state_file
    dotfile_dir.join("hello-servicemesh.json")
  end

  def state
    @state ||= (JSON.parse(File.read(state_file)) rescue {})
  end

  def save_state(values)
    @state = state.merge(values)
    FileUtils.mkdir_p(dotfile_dir)
    File.write(state_file, JSON.pretty_generate(@state) + "\n")
  end

  def created_machines
    Dir.glob(dotfile_dir.join("machines", "*", "*", "id").to_s)
  end

  def load_yaml(relpath)
    path = File.join(ROOT, relpath)
    File.exist?(path) ? (YAML.safe_load(File.read(path), aliases: true) || {}) : {}
  end

  # Settings that shape an existing lab: a lab made with MESH_NODES=3 stays 3 nodes
  # for `vagrant status`, `destroy`, ... without the variable (set it again to change it).
  STICKY = { "nodes" => "MESH_NODES", "servers" => "MESH_SERVERS", "network" => "MESH_NETWORK",
             "container_prefix" => "MESH_CONTAINER_PREFIX" }.freeze unless const_defined?(:STICKY)

  def integer_setting(settings, key, env)
    raw = ENV[env].to_s.empty? ? settings[key] : ENV[env]
    Integer(raw.to_s, 10)
  rescue ArgumentError
    fail!("#{env}=#{raw.inspect} (or `#{key}` in vagrant.yml) must be a whole number")
  end

  def settings
    @settings ||= begin
      s = load_yaml("vagrant.yml")
      if created_machines.any?
        STICKY.each { |key, env| s[key] = state["settings"][key] if ENV[env].to_s.empty? && state.dig("settings", key) }
      end
      s["nodes"] = integer_setting(s, "nodes", "MESH_NODES")
      # servers: auto = three Consul servers when there are three nodes or more, else one.
      if ENV["MESH_SERVERS"].to_s.empty? && s["servers"].to_s == "auto"
        s["servers"] = s["nodes"] >= 3 ? 3 : 1
      else
        s["servers"] = integer_setting(s, "servers", "MESH_SERVERS")
      end
      s["cpus"] = integer_setting(s, "cpus", "MESH_CPUS")
      s["memory"] = integer_setting(s, "memory", "MESH_MEMORY")
      { "MESH_PROFILE" => "profile", "MESH_BOX" => "box", "MESH_IMAGE" => "image", "MESH_NETWORK" => "network",
        "MESH_CONTAINER_PREFIX" => "container_prefix" }.each do |env, key|
        s[key] = ENV[env] unless ENV[env].to_s.empty?
      end
      fail!("MESH_NODES must be at least 1 (got #{s['nodes']})") if s["nodes"] < 1
      unless s["servers"].odd? && s["servers"] <= s["nodes"]
        fail!("MESH_SERVERS must be odd and at most MESH_NODES (got #{s['servers']} servers for #{s['nodes']} nodes): " \
              "Raft needs an odd number of Consul servers")
      end
      unless %w[auto full offline].include?(s["profile"])
        fail!("MESH_PROFILE must be auto, full or offline (got #{s['profile'].inspect})")
      end
      s
    end
  end

  def names
    (1..settings["nodes"]).map { |i| "mesh-#{i}" }
  end

  def servers
    names.first(settings["servers"])
  end

  def node_ip(index)
    "#{settings['network']}.#{settings['first_ip'] + index - 1}"
  end

  # Guest ports of the UIs and the frontend, from where the code defines them (meshlab ports).
  def guest_ports
    @guest_ports ||= meshlab("ports")
  end

  # --- provider -------------------------------------------------------------
  def provider_arg
    ARGV.each_with_index do |a, i|
      return a.split("=", 2)[1] if a.start_with?("--provider=")
      return ARGV[i + 1] if a == "--provider"
    end
    nil
  end

  def libvirt_usable?
    return false unless Vagrant.has_plugin?("vagrant-libvirt")
    return true unless ENV["LIBVIRT_DEFAULT_URI"].to_s.empty?
    %w[/var/run/libvirt/libvirt-sock /run/libvirt/libvirt-sock /run/libvirt/virtqemud-sock].any? { |p| File.socket?(p) }
  end

  # [provider, why]: --provider, the provider of machines already created,
  # VAGRANT_DEFAULT_PROVIDER, else the first of VirtualBox, libvirt, docker that is usable here.
  def provider
    @provider ||= begin
      existing = created_machines.map { |p| File.basename(File.dirname(p)) }.uniq
      if provider_arg
        [provider_arg, "--provider"]
      elsif existing.any?
        [existing.first, "the lab's machines were created with it"]
      elsif !ENV["VAGRANT_DEFAULT_PROVIDER"].to_s.empty?
        [ENV["VAGRANT_DEFAULT_PROVIDER"], "VAGRANT_DEFAULT_PROVIDER"]
      elsif Vagrant::Util::Which.which("VBoxManage")
        ["virtualbox", "VirtualBox is installed"]
      elsif libvirt_usable?
        ["libvirt", "vagrant-libvirt is installed and libvirtd answers"]
      else
        ["docker", "no VirtualBox, no usable libvirt: containers instead of VMs"]
      end
    end
  end

  def docker?
    provider[0] == "docker"
  end

  # Vagrant's docker provider runs the `docker` CLI: point it at Docker Engine
  # or at podman's Docker API (started if need be).
  def ensure_docker_api
    return unless docker? && command && !%w[help version global-status plugin box].include?(command)
    script = File.join(ROOT, "scripts", "podman-docker-socket")
    out, err, status = Open3.capture3(script, "--quiet")
    fail!("no Docker API for the docker provider:\n#{err}") unless status.success?
    ENV["DOCKER_HOST"] = out[/^export DOCKER_HOST=(\S+)/, 1] || ENV["DOCKER_HOST"]
  end

  # The image is built here (podman, as root): scripts/build-image is a no-op
  # when the image is current and rebuilds it when the script or CA bundle changed.
  def ensure_image
    return unless docker? && %w[up reload].include?(command)
    image = settings["image"]
    if Process.uid.zero? && ENV["DOCKER_HOST"].to_s.include?("podman")
      system({ "MESH_IMAGE" => image }, File.join(ROOT, "scripts", "build-image")) || fail!("scripts/build-image failed")
      return
    end
    _, _, status = Open3.capture3("docker", "image", "inspect", image)
    return if status.success?
    fail!("the image #{image} is missing. Build it (as root, with podman): sudo scripts/build-image; " \
          "with Docker Engine then also: sudo podman save #{image} | docker load")
  end

  # Vagrant would name the network after its subnet ("vagrant_network_<a.b.c.d>/24"),
  # which podman refuses (no "/" in names): the lab creates and names its own.
  def docker_network
    "#{settings['container_prefix']}lab-#{settings['network']}.0"
  end

  def ensure_docker_network
    return unless docker? && %w[up reload].include?(command)
    _, _, status = Open3.capture3("docker", "network", "inspect", docker_network)
    return if status.success?
    out, status = Open3.capture2e("docker", "network", "create", "--subnet", "#{settings['network']}.0/24", docker_network)
    fail!("could not create the docker network #{docker_network}:\n#{out}") unless status.success?
  end

  # Vagrant's docker provider connects the private network at every start, and
  # `docker network connect` fails for a (stopped) container that is still
  # connected: before `reload`, or `up` of a stopped container, disconnect it.
  def release_docker_network
    return unless docker? && %w[up reload].include?(command)
    Dir.glob(dotfile_dir.join("machines", "*", "docker", "id").to_s).each do |idfile|
      id = File.read(idfile).strip
      out, status = Open3.capture2("docker", "inspect", "-f",
                                   "{{.State.Running}} {{range $k, $v := .NetworkSettings.Networks}}{{$k}} {{end}}", id)
      next unless status.success?
      running, *networks = out.split
      next unless networks.include?(docker_network) && (command == "reload" || running != "true")
      Open3.capture2e("docker", "network", "disconnect", "--force", docker_network, id)
    end
  end

  def remove_docker_network
    return unless docker? && created_machines.empty?
    Open3.capture2e("docker", "network", "rm", docker_network)
  end

  # --- profile --------------------------------------------------------------
  # The venv's Python, which has the lab model (meshlab) installed.
  def python
    File.join(ROOT, ".venv", "bin", "python")
  end

  # `python -m meshlab ARGS` as parsed JSON; fails the command with meshlab's message.
  def meshlab(*args)
    fail!("the project's toolchain is missing: run `make bootstrap` first") unless File.executable?(python)
    out, err, status = Open3.capture3(python, "-m", "meshlab", *args, chdir: ROOT)
    fail!("python -m meshlab #{args.join(' ')} failed:\n#{err}") unless status.success?
    JSON.parse(out)
  end

  # full | offline, decided by meshlab/profile.py (the same code playbooks/profile.yml runs).
  # MESH_PROFILE forces one; otherwise the lab keeps the profile it was created with.
  def profile
    @profile ||= begin
      wanted = settings["profile"]
      if wanted == "auto" && state["profile"] && created_machines.any?
        say "profile #{state['profile']} (chosen when the lab was created; MESH_PROFILE=full|offline changes it)" if acting?
        @profile_reason = state["profile_reason"]
        state["profile"]
      elsif wanted != "auto" || acting?
        say "deciding the profile (python -m meshlab profile: probes HashiCorp, 5 s timeout)..." if wanted == "auto"
        answer = meshlab("profile", "--requested", wanted)
        @profile_reason = answer["reason"]
        say "profile #{answer['profile'].upcase}: #{answer['reason']}.\n  => #{answer['summary']}." \
            "#{answer['profile'] == 'offline' ? "\n     MESH_PROFILE=full forces the full profile." : ''}" if acting?
        answer["profile"]
      else
        state["profile"] || "offline"
      end
    end
  end

  # Variables every node gets in the generated inventory (host variables: they
  # take precedence over inventory/lab/group_vars, so `make start-workloads` and a
  # re-provision see the same profile).
  def host_vars(index)
    {
      "mesh_profile" => profile,
      # Containers are recreated with new host keys at recycled addresses.
      "ansible_ssh_common_args" => "-o UserKnownHostsFile=/dev/null -o StrictHostKeyChecking=no -o IdentitiesOnly=yes",
      # The first interface is NAT (VMs: the same 10.0.2.15 on each) or a bridge whose
      # address changes at each container start: the mesh uses the private network.
      "mesh_node_address" => node_ip(index),
    }
  end

  # Vagrant writes its inventory to .vagrant/provisioners/ansible/inventory/ and
  # hands Ansible that directory: a group_vars link there makes the generated
  # inventory see inventory/lab/group_vars (the catalog and mesh settings), and
  # the directory is a complete inventory for `make start-workloads/status/click`.
  def link_group_vars
    dir = dotfile_dir.join("provisioners", "ansible", "inventory")
    link = dir.join("group_vars")
    target = Pathname.new(File.join(ROOT, "inventory", "lab", "group_vars")).relative_path_from(dir).to_s
    return if File.symlink?(link) && File.readlink(link) == target
    FileUtils.mkdir_p(dir)
    FileUtils.rm_f(link) if File.symlink?(link)
    File.symlink(target, link) unless File.exist?(link)
  end

  def ansible_playbook
    venv = File.join(ROOT, ".venv", "bin")
    unless File.executable?(File.join(venv, "ansible-playbook"))
      fail!("the project's toolchain is missing: run `make bootstrap` (scripts/bootstrap) first") if acting?
      return "ansible-playbook"
    end
    # Vagrant also runs `ansible --version` from PATH: make it the venv's.
    ENV["PATH"] = "#{venv}#{File::PATH_SEPARATOR}#{ENV['PATH']}" unless ENV["PATH"].to_s.start_with?(venv)
    File.join(venv, "ansible-playbook")
  end

  def prepare
    return if @prepared
    @prepared = true
    ENV["VAGRANT_DEFAULT_PROVIDER"] = provider[0] if ENV["VAGRANT_DEFAULT_PROVIDER"].to_s.empty? && !provider_arg
    # One provisioner on the last node runs for all of them: boot them one after another.
    ENV["VAGRANT_NO_PARALLEL"] = "1" if settings["nodes"] > 1
    if acting?
      say "provider #{provider[0]} (#{provider[1]}); #{settings['nodes']} node(s), #{settings['servers']} Consul server(s)"
    end
    ensure_docker_api
    ensure_image
    ensure_docker_network
    release_docker_network
    link_group_vars
    save_state("settings" => settings.slice(*STICKY.keys),
               "profile" => profile, "profile_reason" => @profile_reason, "provider" => provider[0], "nodes" => names, "servers" => servers,
               "ips" => names.each_index.map { |i| node_ip(i + 1) },
               "guest_ports" => guest_ports, "host_ports" => settings["host_ports"],
               "containers" => docker? ? names.map { |n| settings["container_prefix"] + n } : nil) if acting?
  end

  # After mesh-1 boots: the host ports really forwarded (Vagrant moves a taken
  # port to a free one), for `make urls/click/status`. Asked from the provider
  # where it can tell (docker: the container's bindings; VirtualBox: its NAT
  # rules), else from the machine's config (which Vagrant updates on a move).
  def record_ports(machine)
    by_guest = {}
    machine.config.vm.networks.each do |type, opts|
      by_guest[opts[:guest].to_i] = opts[:host] if type == :forwarded_port
    end
    if machine.provider_name == :docker
      bindings = machine.provider.driver.inspect_container(machine.id).dig("NetworkSettings", "Ports") || {}
      bindings.each do |port, hosts|
        by_guest[port.to_i] = hosts.first["HostPort"].to_i if hosts.is_a?(Array) && hosts.first
      end
    elsif machine.provider.capability?(:forwarded_ports)
      (machine.provider.capability(:forwarded_ports) || {}).each { |host, guest| by_guest[guest.to_i] = host.to_i }
    end
    save_state("forwarded" => guest_ports.transform_values { |guest| by_guest[guest] })
  rescue StandardError => e
    say "could not read the forwarded ports (#{e.message}); `make urls` shows the configured ones"
  end
end

