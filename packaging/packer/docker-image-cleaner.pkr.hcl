# Bakes docker-image-cleaner into a Kubernetes node image. The package is installed and its unit
# left enabled but not started: nothing may clean the images this bake pre-pulls. The first boot
# of an instance starts it, after the node-name unit has written /etc/default/docker-image-cleaner.
#
#   packaging/build.sh
#   packer init packaging/packer && packer build -var version=0.1.0 packaging/packer   # Packer >= 1.7
#   packer build -var version=0.1.0 packaging/packer/docker-image-cleaner.pkr.hcl        # Packer 1.6
#
# This file is valid for Packer 1.6.6 (Debian 12's) and later; plugins.pkr.hcl beside it, which
# only Packer 1.7 and later read, names the Amazon plugin for `packer init`. The provisioning
# itself is provision.sh, which packaging/test-packer.sh runs in a Debian 12 systemd container.
#
# The source below is an example (Debian 12 on AWS); keep the build block and swap the source
# for the builder and base image of your node image. See README.md beside this file.

variable "version" {
  type        = string
  description = "Package version in dist/, e.g. 0.1.0 (the deb is <version>-1, the rpm <version>-1)."
}

variable "package_format" {
  type        = string
  default     = "deb"
  description = "deb (Debian 12+, Ubuntu 22.04+) or rpm (RHEL/Rocky/Alma 9+, Amazon Linux 2023)."
  validation {
    condition     = contains(["deb", "rpm"], var.package_format)
    error_message = "The package_format must be deb or rpm."
  }
}

variable "region" {
  type    = string
  default = "eu-west-1"
}

variable "instance_type" {
  type    = string
  default = "t3.medium"
}

locals {
  package = var.package_format == "deb" ? "docker-image-cleaner_${var.version}-1_amd64.deb" : "docker-image-cleaner-${var.version}-1.x86_64.rpm"
}

source "amazon-ebs" "node" {
  region        = var.region
  instance_type = var.instance_type
  ssh_username  = "admin"
  ami_name      = "k8s-node-docker-image-cleaner-${var.version}-{{timestamp}}"
  source_ami_filter {
    filters = {
      name                = "debian-12-amd64-*"
      virtualization-type = "hvm"
      root-device-type    = "ebs"
    }
    owners      = ["136693071363"] # Debian
    most_recent = true
  }
  # The node-name script asks the metadata service with IMDSv2, so the nodes launched from this
  # image may require it (http_tokens = "required" in their launch template). Packer 1.7 and
  # later can require it on the build instance too (metadata_options); Packer 1.6 cannot.
}

build {
  sources = ["source.amazon-ebs.node"]

  provisioner "file" {
    source      = "${path.root}/../../dist/${local.package}"
    destination = "/tmp/${local.package}"
  }

  provisioner "file" {
    sources     = ["${path.root}/files/docker-image-cleaner-node-name", "${path.root}/files/docker-image-cleaner-node-name.service"]
    destination = "/tmp/"
  }

  # Install the package, the node-name script and its unit; check the cleaner is enabled and
  # not running; empty its state. packaging/test-packer.sh runs this same script.
  provisioner "shell" {
    script           = "${path.root}/provision.sh"
    environment_vars = ["PACKAGE=/tmp/${local.package}", "FILES=/tmp"]
    execute_command  = "chmod +x {{ .Path }}; sudo env {{ .Vars }} {{ .Path }}"
  }
}
