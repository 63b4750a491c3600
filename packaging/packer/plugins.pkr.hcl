# Read by Packer 1.7 and later only (Packer 1.6 knows no required_plugins: build the template
# file alone there, see docker-image-cleaner.pkr.hcl). `packer init packaging/packer` installs
# the Amazon plugin, which Packer 1.10 and later no longer bundle.
packer {
  required_version = ">= 1.7.0"
  required_plugins {
    amazon = {
      version = ">= 1.3.0"
      source  = "github.com/hashicorp/amazon"
    }
  }
}
